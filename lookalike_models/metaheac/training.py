"""MetaHeac training: stage 1 meta-learns an initialisation over many campaigns, stage 2 adapts it to one.

Stage 1 (meta-training): each step samples ``tasks_per_step`` campaigns with probability proportional to
their seed count; per campaign a support and a query batch; one inner SGD step on the support loss for
all parameters; the query loss at the adapted weights is the meta-loss, minimised by Adam. First-order
(the gradient at the adapted weights is applied to the initial ones; CPU default) or second-order
(differentiating through the inner step), selectable.
Stage 2 (adaptation): a copy of the meta-learned weights is fine-tuned a few epochs on one campaign's
seeds with Adam, then scores its candidates.

Labels: a campaign's seeds are positives and its labelled non-converters negatives; when a campaign has
too few labelled negatives, uniformly sampled non-seeds fill up to ``neg_ratio`` per positive, and
``negatives_sampled`` says so (the public Tencent sample, for one, is positives only).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch.func import functional_call

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.metaheac.network import MetaHeacNet, UserBatch


class MetaHeacConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dim: int = Field(16, ge=1, description="Embedding size per field (paper: 64)")
    hidden: int = Field(32, ge=1, description="Expert MLP width (paper: 64)")
    n_experts: int = Field(8, ge=1)
    n_critics: int = Field(5, ge=1)
    gate_hidden: int = Field(32, ge=1)
    batch_size: int = Field(256, ge=1, description="Rows per support / query / adaptation batch")
    tasks_per_step: int = Field(5, ge=1, description="Campaigns per meta-batch")
    meta_steps: int = Field(300, ge=0, description="Stage-1 meta-batches (joint baseline: same count)")
    inner_lr: float = Field(0.05, gt=0, description="Inner SGD step (paper: 2e-4 on the full data)")
    outer_lr: float = Field(1e-3, gt=0, description="Outer Adam learning rate")
    second_order: bool = Field(False, description="Differentiate through the inner step (heavy on CPU)")
    adapt_epochs: int = Field(2, ge=0, description="Stage-2 epochs on a campaign's seeds")
    adapt_lr: float = Field(1e-3, gt=0, description="Stage-2 Adam rate (paper: 1e-3)")
    adapt_min_steps: int = Field(20, ge=0, description="At least this many stage-2 updates: a cold campaign's "
                                 "seeds fill one or two batches, so 2 epochs alone would barely move the weights")
    scratch_epochs: int = Field(20, ge=1, description="scratch_baseline only: epochs from random weights")
    scratch_lr: float = Field(1e-2, gt=0, description="scratch_baseline only: Adam rate (1e-3 barely moves "
                              "random weights in a cold campaign's few steps)")
    neg_ratio: float = Field(1.0, gt=0, description="Sampled non-seeds per positive when labels lack them")
    task_seeds: int = Field(64, ge=1, description="Seed users averaged into the task vector")
    cold_threshold: int = Field(2000, ge=0, description="Campaigns with at most this many positives are cold")
    meta_campaigns: list[str] | None = Field(None, description="Campaigns for stage 1 (None: all given)")
    score_batch: int = Field(8192, ge=1)
    meta_weights_path: str | None = Field(None, description="Nightly reuse: stage-1 weights are loaded from "
                                          "this file when younger than meta_max_age_hours, else re-trained "
                                          "and written there (meta-train when due, adapt every night)")
    meta_max_age_hours: float = Field(168.0, gt=0, description="Age at which stage 1 is due again")
    seed: int = 0


def campaign_kind(n_positives: int, threshold: int) -> str:
    """'cold' for campaigns with at most ``threshold`` positives (MetaHeac: 2000), else 'hot'."""
    return "cold" if n_positives <= threshold else "hot"


class UserTable:
    """The whole population's encoded fields as tensors; ``batch(idx)`` gathers rows."""

    def __init__(self, data: LookalikeData):
        u = data.users
        self.single = torch.as_tensor(u.single, dtype=torch.long)
        self.multi = tuple(torch.as_tensor(m, dtype=torch.long) for m in u.multi)
        self.continuous = torch.as_tensor(u.continuous, dtype=torch.float32)
        self.n_users = data.n_users

    def batch(self, idx: np.ndarray) -> UserBatch:
        t = torch.as_tensor(idx, dtype=torch.long)
        return UserBatch(self.single[t], tuple(m[t] for m in self.multi), self.continuous[t])


def build_net(data: LookalikeData, cfg: MetaHeacConfig) -> MetaHeacNet:
    u = data.users
    return MetaHeacNet(u.single_sizes, u.multi_sizes, len(u.names_continuous), data.campaign_field_sizes,
                       cfg.dim, cfg.hidden, cfg.n_experts, cfg.n_critics, cfg.gate_hidden)


def campaign_codes(data: LookalikeData, campaign_id: str) -> torch.Tensor:
    """The campaign's field codes int64 [n_campaign_fields]; 0 (missing) for a campaign without features."""
    codes = data.campaign_fields.get(campaign_id)
    if codes is None:
        codes = np.zeros(len(data.campaign_field_sizes), np.int64)
    return torch.as_tensor(codes, dtype=torch.long)


@dataclass
class Task:
    """One campaign's labelled rows, ready for batching."""

    campaign_id: str
    positives: np.ndarray
    negatives: np.ndarray
    campaign: torch.Tensor

    @property
    def n_rows(self) -> int:
        return self.positives.size + self.negatives.size


def make_task(data: LookalikeData, seeds: CampaignSeeds) -> Task:
    return Task(seeds.campaign_id, np.asarray(seeds.positives, np.int64), np.asarray(seeds.negatives, np.int64),
                campaign_codes(data, seeds.campaign_id))


class RowSampler:
    """Batches of (user_idx, label) for one task, topping up with sampled non-seeds where labels lack them."""

    def __init__(self, n_users: int, neg_ratio: float, rng: np.random.Generator):
        self.n_users, self.neg_ratio, self.rng = n_users, neg_ratio, rng
        self.sampled_any = False

    def label_rows(self, task: Task, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows index the task's labelled list (positives first) -> (users, labels) with top-up negatives."""
        is_pos = rows < task.positives.size
        users = np.where(is_pos, task.positives[np.minimum(rows, task.positives.size - 1)],
                         task.negatives[np.clip(rows - task.positives.size, 0, max(task.negatives.size - 1, 0))]
                         if task.negatives.size else 0)
        want = int(np.ceil(self.neg_ratio * is_pos.sum())) - int((~is_pos).sum())
        labels = is_pos.astype(np.float32)
        if want > 0:
            extra = self.rng.integers(0, self.n_users, want)
            extra = extra[~np.isin(extra, task.positives)]
            self.sampled_any = self.sampled_any or extra.size > 0
            users = np.concatenate([users, extra])
            labels = np.concatenate([labels, np.zeros(extra.size, np.float32)])
        return users, labels

    def support_query(self, task: Task, batch_size: int):
        """Disjoint support and query rows (each at most ``batch_size``); a campaign too small to split
        uses the same rows for both instead of failing."""
        order = self.rng.permutation(task.n_rows)
        if order.size < 2:
            return self.label_rows(task, order), self.label_rows(task, order)
        half = order.size // 2
        support, query = order[:half][:batch_size], order[half:][:batch_size]
        return self.label_rows(task, support), self.label_rows(task, query)

    def epoch(self, task: Task, batch_size: int):
        order = self.rng.permutation(task.n_rows)
        for start in range(0, order.size, batch_size):
            yield self.label_rows(task, order[start:start + batch_size])

    def task_seeds(self, task: Task, k: int) -> np.ndarray:
        return self.rng.choice(task.positives, min(k, task.positives.size), replace=False)


def bce(prob: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    return F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), torch.as_tensor(labels))


def _task_sampler(tasks: list[Task], rng: np.random.Generator, k: int):
    sizes = np.array([t.positives.size for t in tasks], np.float64)
    p = sizes / sizes.sum()

    def draw() -> list[Task]:
        return [tasks[i] for i in rng.choice(len(tasks), min(k, len(tasks)), replace=False, p=p)]
    return draw


@dataclass
class TrainStats:
    steps: int = 0
    samples: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")
    negatives_sampled: bool = False
    losses: list[float] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else float("nan")


def usable_tasks(data: LookalikeData, train_seeds: dict[str, CampaignSeeds], only: list[str] | None) -> list[Task]:
    chosen = [c for c in train_seeds if only is None or c in set(only)]
    return [make_task(data, train_seeds[c]) for c in chosen if train_seeds[c].positives.size > 0]


def meta_train(net: MetaHeacNet, users: UserTable, tasks: list[Task], cfg: MetaHeacConfig,
               meta: bool = True) -> TrainStats:
    """Stage 1. ``meta=False`` trains the same network jointly on the same batches (no inner step):
    the joint baseline."""
    rng = np.random.default_rng(cfg.seed)
    sampler = RowSampler(users.n_users, cfg.neg_ratio, rng)
    draw = _task_sampler(tasks, rng, cfg.tasks_per_step)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    names = [n for n, _ in net.named_parameters()]
    stats, start = TrainStats(), time.perf_counter()
    net.train()
    for _ in range(cfg.meta_steps if tasks else 0):
        opt.zero_grad()
        batch_tasks, step_loss = draw(), 0.0
        for task in batch_tasks:
            (s_users, s_y), (q_users, q_y) = sampler.support_query(task, cfg.batch_size)
            seeds = users.batch(sampler.task_seeds(task, cfg.task_seeds))
            stats.samples += s_y.size + q_y.size
            if not meta:
                both = users.batch(np.concatenate([s_users, q_users]))
                loss = bce(net(both, seeds, task.campaign), np.concatenate([s_y, q_y])) / len(batch_tasks)
                loss.backward()
                step_loss += float(loss.detach())
                continue
            params = dict(net.named_parameters())
            support_loss = bce(functional_call(net, params, (users.batch(s_users), seeds, task.campaign)), s_y)
            grads = torch.autograd.grad(support_loss, list(params.values()), create_graph=cfg.second_order,
                                        allow_unused=True)
            fast = {n: p if g is None else p - cfg.inner_lr * g for (n, p), g in zip(params.items(), grads)}
            if not cfg.second_order:
                fast = {n: p.detach().requires_grad_() for n, p in fast.items()}
            query_loss = bce(functional_call(net, fast, (users.batch(q_users), seeds, task.campaign)), q_y)
            query_loss = query_loss / len(batch_tasks)
            step_loss += float(query_loss.detach())
            if cfg.second_order:
                query_loss.backward()
            else:
                # First-order: the query gradient at the adapted weights updates the initial weights.
                q_grads = torch.autograd.grad(query_loss, [fast[n] for n in names], allow_unused=True)
                for (_, p), g in zip(net.named_parameters(), q_grads):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
        opt.step()
        stats.steps += 1
        stats.final_loss = step_loss
        stats.losses.append(step_loss)
    stats.seconds = time.perf_counter() - start
    stats.negatives_sampled = sampler.sampled_any
    return stats


def adapt(net: MetaHeacNet, users: UserTable, task: Task, cfg: MetaHeacConfig, epochs: int,
          rng: np.random.Generator) -> tuple[MetaHeacNet, bool]:
    """Stage 2: a fine-tuned copy of ``net`` for one campaign; also whether negatives were sampled."""
    net = copy.deepcopy(net)
    sampler = RowSampler(users.n_users, cfg.neg_ratio, rng)
    if epochs == 0 or task.positives.size == 0:
        return net, False
    opt = torch.optim.Adam(net.parameters(), lr=cfg.adapt_lr)
    net.train()
    batches_per_epoch = -(-task.n_rows // cfg.batch_size)
    for _ in range(max(epochs, -(-cfg.adapt_min_steps // batches_per_epoch))):
        for batch_users, labels in sampler.epoch(task, cfg.batch_size):
            seeds = users.batch(sampler.task_seeds(task, cfg.task_seeds))
            opt.zero_grad()
            bce(net(users.batch(batch_users), seeds, task.campaign), labels).backward()
            opt.step()
    return net, sampler.sampled_any


@torch.no_grad()
def score_users(net: MetaHeacNet, users: UserTable, task: Task, candidates: np.ndarray,
                cfg: MetaHeacConfig) -> np.ndarray:
    """Conversion probability float32 [n_candidates] of ``candidates`` for the task's campaign."""
    net.eval()
    if task.positives.size == 0:
        return np.zeros(candidates.size, np.float32)
    # A fixed seed sample, so that scoring is deterministic run to run.
    rng = np.random.default_rng([cfg.seed, task.positives.size])
    seeds = users.batch(rng.choice(task.positives, min(cfg.task_seeds, task.positives.size), replace=False))
    out = [net(users.batch(candidates[i:i + cfg.score_batch]), seeds, task.campaign)
           for i in range(0, candidates.size, cfg.score_batch)]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)
