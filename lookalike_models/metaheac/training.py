"""MetaHeac training: stage 1 meta-learns an initialisation over many campaigns, stage 2 adapts it to one.

Stage 2 (adaptation, ``adapt_weights``): ``adapt_steps`` updates of ``adapt_optimizer`` at ``adapt_lr`` on
one campaign's seeds (plus labelled or sampled non-seeds), starting from the meta-learned weights.
Stage 1 (meta-training): each step draws ``tasks_per_step`` campaigns (uniformly by default, so that the
cold tail is not swamped by hot campaigns; ``task_sampling="proportional"`` draws by seed count). Per
campaign, a few support seeds (a size from ``support_seeds``: the few-seed regime served) and disjoint query
positives; the inner loop is *the same* ``adapt_weights`` procedure serving runs (same optimiser, rate and
step count), so the initialisation is meta-learned for the adaptation actually used. The query loss at the
adapted weights is the meta-loss, minimised by Adam; first-order (the query gradient at the adapted weights
is applied to the initial ones; CPU default) or second-order (differentiating through the inner loop).
``inner_loop="one_sgd_step"`` is the ablation of a mismatched inner loop (one SGD step at ``inner_lr``).

Labels: a campaign's seeds are positives and its labelled non-converters negatives; when a campaign has
too few labelled negatives, uniformly sampled users who are not known positives fill up to ``neg_ratio``
per positive, and ``negatives_sampled`` says so (the public Tencent sample, for one, is positives only).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from lookalike_models.dataset import LookalikeData
from lookalike_models.metaheac.episodes import RowSampler, Task, task_sampler
from lookalike_models.metaheac.network import Gating, MetaHeacNet, MetaHeacShape
from lookalike_models.nn.fields import FieldSizes, UserFeatures
from lookalike_models.progress import Progress
from lookalike_models.strict_config import StrictConfig


class MetaHeacConfig(StrictConfig):
    dim: int = Field(16, ge=1, description="Embedding size per field (paper: 64)")
    hidden: int = Field(32, ge=1, description="Expert MLP width (paper: 64)")
    n_experts: int = Field(8, ge=1)
    n_critics: int = Field(5, ge=1)
    gate_hidden: int = Field(32, ge=1)
    gating: Gating = Field(
        "row",
        description="Gate input: each row's own user-field mean + ad fields (paper), "
        "or 'campaign': the mean over the campaign's seeds (one mix per campaign; ablation)",
    )
    batch_size: int = Field(256, ge=1, description="Rows per adaptation batch")
    tasks_per_step: int = Field(4, ge=1, description="Campaigns per meta-batch")
    meta_steps: int = Field(200, ge=0, description="Stage-1 meta-batches (joint baseline: same count)")
    task_sampling: Literal["uniform", "proportional"] = Field(
        "uniform", description="How stage 1 draws campaigns: uniformly, or in proportion to seed count"
    )
    support_seeds: list[int] = Field(
        [5, 10, 20],
        min_length=1,
        description="Stage 1: a task's support positives, one of these sizes per draw (the few-seed regime served)",
    )
    query_positives: int = Field(32, ge=1, description="Stage 1: a task's query positives, never in its support")
    inner_loop: Literal["adaptation", "one_sgd_step"] = Field(
        "adaptation",
        description="Stage-1 inner loop: the serving adaptation itself, or one SGD step at "
        "inner_lr (the mismatched pre-fix inner loop, kept as an ablation)",
    )
    inner_lr: float = Field(0.05, gt=0, description="inner_loop='one_sgd_step' only")
    outer_lr: float = Field(1e-3, gt=0, description="Outer Adam learning rate")
    second_order: bool = Field(False, description="Differentiate through the inner loop (heavy on CPU)")
    adapt_optimizer: Literal["adam", "sgd"] = Field("adam", description="Stage-2 (and inner-loop) optimiser")
    adapt_lr: float = Field(1e-2, gt=0, description="Stage-2 (and inner-loop) rate")
    adapt_steps: int = Field(10, ge=0, description="Stage-2 (and inner-loop) updates")
    scratch_steps: int = Field(50, ge=1, description="scratch_baseline only: updates from random weights")
    scratch_lr: float = Field(1e-2, gt=0, description="scratch_baseline only: rate from random weights")
    neg_ratio: float = Field(1.0, gt=0, description="Sampled non-seeds per positive when labels lack them")
    task_seeds: int = Field(64, ge=1, description="gating='campaign' only: seed users averaged into the gate")
    cold_threshold: int = Field(2000, ge=0, description="Campaigns with at most this many positives are cold")
    meta_campaigns: list[str] | None = Field(None, description="Campaigns for stage 1 (None: all given)")
    score_batch: int = Field(8192, ge=1)
    meta_weights_path: str | None = Field(
        None,
        description="Nightly reuse: stage-1 weights are loaded from "
        "this file when trained for this model, config and field layout "
        "less than meta_max_age_hours ago, else re-trained and written "
        "there (meta-train when due, adapt every night)",
    )
    meta_max_age_hours: float = Field(168.0, gt=0, description="Age at which stage 1 is due again")
    seed: int = 0


@dataclass(frozen=True)
class Adaptation:
    """One adaptation procedure: ``steps`` updates of ``optimizer`` at ``lr`` on batches of ``batch_size``."""

    optimizer: Literal["adam", "sgd"]
    lr: float
    steps: int
    batch_size: int


def serving_adaptation(cfg: MetaHeacConfig) -> Adaptation:
    """Stage 2's procedure; stage 1's inner loop is the same one unless the ablation asks otherwise."""
    return Adaptation(cfg.adapt_optimizer, cfg.adapt_lr, cfg.adapt_steps, cfg.batch_size)


def inner_adaptation(cfg: MetaHeacConfig) -> Adaptation:
    if cfg.inner_loop == "one_sgd_step":
        return Adaptation("sgd", cfg.inner_lr, 1, cfg.batch_size)
    return serving_adaptation(cfg)


def campaign_kind(n_positives: int, threshold: int) -> str:
    """'cold' for campaigns with at most ``threshold`` positives (MetaHeac: 2000), else 'hot'."""
    return "cold" if n_positives <= threshold else "hot"


def build_net(data: LookalikeData, cfg: MetaHeacConfig) -> MetaHeacNet:
    u = data.users
    if not u.single_sizes and not u.multi_sizes and not u.names_continuous:
        raise ValueError(
            "MetaHeac needs user features; this data has none (the Amazon adapter writes "
            "history fields with user_history=True)"
        )
    shape = MetaHeacShape(cfg.dim, cfg.hidden, cfg.n_experts, cfg.n_critics, cfg.gate_hidden, cfg.gating)
    return MetaHeacNet(FieldSizes.of(u), data.campaign_field_sizes, shape)


def bce(prob: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    return F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), torch.as_tensor(labels))


def adapt_weights(
    net: MetaHeacNet,
    params: dict[str, torch.Tensor],
    users: UserFeatures,
    task: Task,
    how: Adaptation,
    sampler: RowSampler,
    gate_seeds: UserFeatures | None,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """The one adaptation procedure (stage 2, and stage 1's inner loop): ``how.steps`` updates of SGD or
    Adam (bias-corrected, as ``torch.optim.Adam``) from ``params`` on the task's rows; returns the adapted
    weights. ``create_graph`` keeps the graph through every update (second-order meta-gradients); without
    it each update starts from detached leaves."""
    names = list(params)
    moments = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in params.items()}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    batches = sampler.batches(task, how.batch_size)
    for t in range(1, how.steps + 1):
        batch_users, labels = next(batches)
        loss = bce(functional_call(net, params, (users.rows(batch_users), task.campaign, gate_seeds)), labels)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
        if not create_graph:
            params = dict(zip(names, _detached_update(how, [params[n] for n in names], grads, moments, names, t)))
            continue
        updated = {}
        for n, g in zip(names, grads):
            step = g
            if how.optimizer == "adam":
                m, v = moments[n]
                m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
                moments[n] = (m, v)
                step = (m / (1 - beta1**t)) / ((v / (1 - beta2**t) + 1e-20).sqrt() + eps)
            updated[n] = params[n] - how.lr * step
        params = updated
    return params


@torch.no_grad()
def _detached_update(
    how: Adaptation,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]],
    names: list[str],
    t: int,
) -> list[torch.Tensor]:
    """The same SGD / Adam update as ``adapt_weights``' differentiable one, as a few fused ``_foreach``
    ops over all tensors (the per-tensor Python loop dominated a CPU inner step); returns new leaves."""
    if how.optimizer == "sgd":
        new = torch._foreach_add(params, grads, alpha=-how.lr)
    else:
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        m = torch._foreach_add(torch._foreach_mul([moments[n][0] for n in names], beta1), grads, alpha=1 - beta1)
        v = torch._foreach_mul([moments[n][1] for n in names], beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        for n, mi, vi in zip(names, m, v):
            moments[n] = (mi, vi)
        denom = torch._foreach_add(torch._foreach_sqrt(torch._foreach_div(v, 1 - beta2**t)), eps)
        new = torch._foreach_addcdiv(params, m, denom, value=-how.lr / (1 - beta1**t))
    return [p.requires_grad_() for p in new]


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


def meta_train(
    net: MetaHeacNet, users: UserFeatures, tasks: list[Task], cfg: MetaHeacConfig, meta: bool = True
) -> TrainStats:
    """Stage 1. ``meta=False`` trains the same network jointly on the same episodes (support and query rows
    at the current weights, no inner loop): the joint baseline."""
    rng = np.random.default_rng(cfg.seed)
    sampler = RowSampler(users.n_users, cfg.neg_ratio, rng)
    draw = task_sampler(tasks, rng, cfg.tasks_per_step, cfg.task_sampling)
    inner = inner_adaptation(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.outer_lr)
    stats, start = TrainStats(), time.perf_counter()
    net.train()
    n_steps = cfg.meta_steps if tasks else 0
    with Progress("metaheac meta-training" if meta else "metaheac joint training", n_steps, "steps") as progress:
        for _ in range(n_steps):
            opt.zero_grad()
            batch_tasks, step_loss = draw(), 0.0
            for task in batch_tasks:
                support, query = sampler.support_query(task, cfg.support_seeds, cfg.query_positives)
                seeds = users.rows(sampler.gate_seeds(support, cfg.task_seeds)) if cfg.gating == "campaign" else None
                q_users, q_y = sampler.label_rows(query, np.arange(query.n_rows))
                if not meta:
                    s_users, s_y = sampler.label_rows(support, np.arange(support.n_rows))
                    both = users.rows(np.concatenate([s_users, q_users]))
                    loss = bce(net(both, task.campaign, seeds), np.concatenate([s_y, q_y])) / len(batch_tasks)
                    loss.backward()
                    stats.samples += s_y.size + q_y.size
                    step_loss += float(loss.detach())
                    continue
                params = dict(net.named_parameters())
                if not cfg.second_order:
                    params = {n: p.detach().requires_grad_() for n, p in params.items()}
                fast = adapt_weights(net, params, users, support, inner, sampler, seeds, create_graph=cfg.second_order)
                stats.samples += inner.steps * 2 * support.positives.size + q_y.size
                query_loss = bce(functional_call(net, fast, (users.rows(q_users), task.campaign, seeds)), q_y)
                query_loss = query_loss / len(batch_tasks)
                step_loss += float(query_loss.detach())
                if cfg.second_order:
                    query_loss.backward()
                    continue
                # First-order: the query gradient at the adapted weights updates the initial weights.
                q_grads = torch.autograd.grad(query_loss, list(fast.values()), allow_unused=True)
                for p, g in zip(net.parameters(), q_grads):
                    if g is not None:
                        p.grad = g if p.grad is None else p.grad + g
            opt.step()
            stats.steps += 1
            stats.final_loss = step_loss
            stats.losses.append(step_loss)
            progress.advance()
    stats.seconds = time.perf_counter() - start
    stats.negatives_sampled = sampler.sampled_any
    return stats


def fixed_gate_seeds(users: UserFeatures, task: Task, cfg: MetaHeacConfig) -> UserFeatures | None:
    """gating='campaign': a fixed sample of the campaign's seeds, so that serving is deterministic."""
    if cfg.gating != "campaign" or task.positives.size == 0:
        return None
    rng = np.random.default_rng([cfg.seed, task.positives.size])
    return users.rows(rng.choice(task.positives, min(cfg.task_seeds, task.positives.size), replace=False))


def adapt(
    net: MetaHeacNet, users: UserFeatures, task: Task, cfg: MetaHeacConfig, how: Adaptation, rng: np.random.Generator
) -> tuple[MetaHeacNet, bool]:
    """Stage 2: a copy of ``net`` adapted to one campaign by ``adapt_weights``; also whether negatives
    were sampled."""
    net = copy.deepcopy(net)
    if how.steps == 0 or task.positives.size == 0:
        return net, False
    sampler = RowSampler(users.n_users, cfg.neg_ratio, rng)
    params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    fast = adapt_weights(net, params, users, task, how, sampler, fixed_gate_seeds(users, task, cfg))
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(fast[n])
    return net, sampler.sampled_any


@torch.no_grad()
def score_users(
    net: MetaHeacNet, users: UserFeatures, task: Task, candidates: np.ndarray, cfg: MetaHeacConfig
) -> np.ndarray:
    """Conversion probability float32 [n_candidates] of ``candidates`` for the task's campaign."""
    net.eval()
    if task.positives.size == 0:
        return np.zeros(candidates.size, np.float32)
    seeds = fixed_gate_seeds(users, task, cfg)
    out = [
        net(users.rows(candidates[i : i + cfg.score_batch]), task.campaign, seeds)
        for i in range(0, candidates.size, cfg.score_batch)
    ]
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros(0, np.float32)
