"""MetaHeac's episodes (Zhu et al., KDD 2021): a campaign as a task of labelled rows, the batches drawn from
it (topped up with sampled non-seeds where labels lack them), stage 1's support/query split, and the draw of
campaigns per meta-step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lookalike_models.dataset import CampaignSeeds, LookalikeData


def campaign_codes(data: LookalikeData, campaign_id: str) -> torch.Tensor:
    """The campaign's field codes int64 [n_campaign_fields]; 0 (missing) for a campaign without features."""
    codes = data.campaign_fields.get(campaign_id)
    if codes is None:
        codes = np.zeros(len(data.campaign_field_sizes), np.int64)
    return torch.as_tensor(codes, dtype=torch.long)


@dataclass
class Task:
    """One campaign's labelled rows, ready for batching. ``known_positives`` (default: ``positives``) are
    never drawn as sampled negatives: in stage 1 they include the query positives hidden from the support."""

    campaign_id: str
    positives: np.ndarray
    negatives: np.ndarray
    campaign: torch.Tensor
    known_positives: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.known_positives is None:
            self.known_positives = self.positives

    @property
    def n_rows(self) -> int:
        return self.positives.size + self.negatives.size


def make_task(data: LookalikeData, seeds: CampaignSeeds) -> Task:
    return Task(
        seeds.campaign_id,
        np.asarray(seeds.positives, np.int64),
        np.asarray(seeds.negatives, np.int64),
        campaign_codes(data, seeds.campaign_id),
    )


class RowSampler:
    """Batches of (user_idx, label) for one task, topping up with sampled non-seeds where labels lack them."""

    def __init__(self, n_users: int, neg_ratio: float, rng: np.random.Generator):
        self.n_users, self.neg_ratio, self.rng = n_users, neg_ratio, rng
        self.sampled_any = False

    def label_rows(self, task: Task, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows index the task's labelled list (positives first) -> (users, labels) with top-up negatives."""
        is_pos = rows < task.positives.size
        users = np.where(
            is_pos,
            task.positives[np.minimum(rows, task.positives.size - 1)],
            task.negatives[np.clip(rows - task.positives.size, 0, max(task.negatives.size - 1, 0))]
            if task.negatives.size
            else 0,
        )
        want = int(np.ceil(self.neg_ratio * is_pos.sum())) - int((~is_pos).sum())
        labels = is_pos.astype(np.float32)
        if want > 0:
            extra = self.rng.integers(0, self.n_users, want)
            extra = extra[~np.isin(extra, task.known_positives)]
            self.sampled_any = self.sampled_any or extra.size > 0
            users = np.concatenate([users, extra])
            labels = np.concatenate([labels, np.zeros(extra.size, np.float32)])
        return users, labels

    def batches(self, task: Task, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless batches, epoch after epoch; sampled negatives are drawn afresh for every batch."""
        while True:
            order = self.rng.permutation(task.n_rows)
            for start in range(0, order.size, batch_size):
                yield self.label_rows(task, order[start : start + batch_size])

    def support_query(self, task: Task, support_sizes: list[int], query_positives: int) -> tuple[Task, Task]:
        """A stage-1 episode: support = a few seeds (one of ``support_sizes``, at most half the task's) and
        as many labelled negatives; query = other positives and negatives, never in the support. A campaign
        with a single seed uses it for both instead of failing."""
        pos, neg = self.rng.permutation(task.positives), self.rng.permutation(task.negatives)
        if pos.size < 2:
            return task, task
        k = min(int(self.rng.choice(support_sizes)), pos.size // 2)
        k_neg = min(int(np.ceil(self.neg_ratio * k)), neg.size // 2)
        q_neg = min(int(np.ceil(self.neg_ratio * query_positives)), neg.size - k_neg)
        support = Task(task.campaign_id, pos[:k], neg[:k_neg], task.campaign, task.positives)
        query = Task(
            task.campaign_id, pos[k : k + query_positives], neg[k_neg : k_neg + q_neg], task.campaign, task.positives
        )
        return support, query

    def gate_seeds(self, task: Task, k: int) -> np.ndarray:
        return self.rng.choice(task.positives, min(k, task.positives.size), replace=False)


def usable_tasks(data: LookalikeData, train_seeds: dict[str, CampaignSeeds], only: list[str] | None) -> list[Task]:
    chosen = [c for c in train_seeds if only is None or c in set(only)]
    return [make_task(data, train_seeds[c]) for c in chosen if train_seeds[c].positives.size > 0]


def task_sampler(tasks: list[Task], rng: np.random.Generator, k: int, how: str) -> Callable[[], list[Task]]:
    """A draw of ``k`` distinct campaigns: uniformly, or in proportion to their seed counts."""
    sizes = np.array([t.positives.size for t in tasks], np.float64)
    p = sizes / sizes.sum() if how == "proportional" else None

    def draw() -> list[Task]:
        return [tasks[i] for i in rng.choice(len(tasks), min(k, len(tasks)), replace=False, p=p)]

    return draw
