"""The MetaHeac scorers: ``metaheac`` and its two baselines on the same network.

- ``metaheac``: stage 1 meta-trains on the training campaigns; per campaign, stage 2 adapts a copy of the
  meta-learned weights on the campaign's seeds and scores its candidates.
- ``joint_baseline``: the same network trained jointly on the same episodes (no inner loop), then the
  same stage-2 adaptation: the difference to ``metaheac`` is the meta-learning alone.
- ``scratch_baseline``: the same network adapted per campaign from random weights (``scratch_steps`` at
  ``scratch_lr``, the same optimiser).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from lookalike_models.dataset import CampaignSeeds, LookalikeData
from lookalike_models.evaluation import campaign_rng
from lookalike_models.io import write_bytes_atomic
from lookalike_models.metaheac.episodes import make_task, usable_tasks
from lookalike_models.metaheac.training import (
    Adaptation,
    MetaHeacConfig,
    TrainStats,
    adapt,
    build_net,
    campaign_kind,
    meta_train,
    score_users,
    serving_adaptation,
)
from lookalike_models.nn.fields import UserFeatures
from lookalike_models.scorers import AudienceScorer, register

WEIGHTS = "metaheac_weights.pt"
# Config fields that do not touch the stage-1 weights: changing them must not force a re-training.
SERVING_ONLY = {"meta_weights_path", "meta_max_age_hours", "cold_threshold", "score_batch"}

log = logging.getLogger(__name__)


class _MetaHeacBase(AudienceScorer):
    config_class = MetaHeacConfig
    meta_learning = True

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        torch.manual_seed(self.config.seed)
        self.users = UserFeatures.of(data.users)
        self.net = build_net(data, self.config)
        self.adapt_seconds: dict[str, float] = {}
        cached = self.config.meta_weights_path and Path(self.config.meta_weights_path)
        if cached and self.stage1_reusable(cached, data):
            self.load(cached.parent, data, cached.name)  # a matching record whose weights do not load is a bug
            self.history = {"stage1_reused": [1.0]}
            return
        tasks = usable_tasks(data, train_seeds, self.config.meta_campaigns)
        self.stats = meta_train(self.net, self.users, tasks, self.config, meta=self.meta_learning)
        self.stage1 = {"fingerprint": self.stage1_fingerprint(data), "trained_at": time.time()}
        self.negatives_sampled = self.stats.negatives_sampled
        # Logged by the nightly flow as training curves; negatives_sampled = 1 flags sampled labels.
        self.history = {"meta_loss": self.stats.losses, "negatives_sampled": [float(self.negatives_sampled)]}
        if cached:
            self.save(cached.parent, cached.name)

    def stage1_fingerprint(self, data: LookalikeData) -> str:
        """What stage-1 weights depend on: the model (meta-learned or joint), the config that shapes or trains
        the network, and the layout of the user and campaign fields. Not the interactions themselves: stage 1
        is meant to serve several nights while it is fresh (``meta_max_age_hours``)."""
        u = data.users
        facts = {
            "model": self.name,
            "config": self.config.model_dump(mode="json", exclude=SERVING_ONLY),
            "fields": [
                u.names_single,
                u.single_sizes,
                u.names_multi,
                u.multi_sizes,
                u.names_continuous,
                data.campaign_field_names,
                data.campaign_field_sizes,
            ],
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]

    def stage1_reusable(self, weights: Path, data: LookalikeData) -> bool:
        """Whether the stage-1 weights at ``weights`` were trained for this model, config and field layout
        (the fingerprint recorded beside them) less than ``meta_max_age_hours`` ago."""
        record_path = weights.with_name(f"{weights.name}.json")
        if not weights.exists() or not record_path.exists():
            return False
        record = json.loads(record_path.read_text()).get("stage1") or {}
        if record.get("fingerprint") != self.stage1_fingerprint(data):
            log.info(
                "%s: stage-1 weights %s were trained for another model, config or field layout; stage 1 is due",
                self.name,
                weights,
            )
            return False
        return time.time() - record["trained_at"] < 3600 * self.config.meta_max_age_hours

    def adaptation(self) -> Adaptation:
        return serving_adaptation(self.config)

    def score(self, data: LookalikeData, seeds: CampaignSeeds, candidates: np.ndarray) -> np.ndarray:
        task = make_task(data, seeds)
        rng = campaign_rng(self.config.seed, seeds.campaign_id, task.positives.size)
        start = time.perf_counter()
        adapted, sampled = adapt(self.net, self.users, task, self.config, self.adaptation(), rng)
        self.adapt_seconds[seeds.campaign_id] = time.perf_counter() - start
        self.negatives_sampled = self.negatives_sampled or sampled
        return score_users(adapted, self.users, task, np.asarray(candidates, np.int64), self.config)

    def campaign_kind(self, seeds: CampaignSeeds) -> str:
        return campaign_kind(seeds.size, self.config.cold_threshold)

    def params(self) -> dict[str, object]:
        """What a run should log besides the config: training figures and whether negatives were sampled."""
        return {
            "negatives_sampled": self.negatives_sampled,
            "meta_steps_done": self.stats.steps,
            "train_samples_per_s": round(self.stats.samples_per_s, 1),
            "train_seconds": self.stats.seconds,
        }

    def save(self, folder: Path, weights: str = WEIGHTS) -> None:
        """The meta-learned weights (``torch.save`` of the state dict) and the stage-1 figures (JSON)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{weights}.tmp"
        torch.save(self.net.state_dict(), tmp)
        tmp.replace(folder / weights)  # a reader never sees half a file
        stats = {k: getattr(self.stats, k) for k in ("steps", "samples", "seconds", "final_loss", "negatives_sampled")}
        record = {"model": self.name, "stats": stats, "stage1": getattr(self, "stage1", None)}
        write_bytes_atomic(json.dumps(record, indent=1).encode(), folder / f"{weights}.json")

    def load(self, folder: Path, data: LookalikeData, weights: str = WEIGHTS) -> None:
        folder = Path(folder)
        self.users = UserFeatures.of(data.users)
        self.net = build_net(data, self.config)
        self.net.load_state_dict(torch.load(folder / weights, weights_only=True))
        meta = json.loads((folder / f"{weights}.json").read_text())
        self.stats = TrainStats(**meta["stats"])
        self.stage1 = meta.get("stage1")
        self.adapt_seconds, self.negatives_sampled = {}, self.stats.negatives_sampled


@register("metaheac")
class MetaHeacScorer(_MetaHeacBase):
    """Meta-learned hybrid experts and critics (Zhu et al., KDD 2021), adapted per campaign."""


@register("joint_baseline")
class JointBaselineScorer(_MetaHeacBase):
    """The MetaHeac network trained jointly over campaigns (no meta-learning), adapted per campaign."""

    meta_learning = False


@register("scratch_baseline")
class ScratchBaselineScorer(_MetaHeacBase):
    """The MetaHeac network trained per campaign from random weights."""

    def fit(self, data: LookalikeData, train_seeds: dict[str, CampaignSeeds]) -> None:
        cfg = self.config.model_copy(update={"meta_steps": 0})
        torch.manual_seed(cfg.seed)
        self.users = UserFeatures.of(data.users)
        self.net = build_net(data, cfg)  # random weights, copied fresh for each campaign
        self.stats = TrainStats()
        self.adapt_seconds, self.negatives_sampled, self.history = {}, False, {}

    def adaptation(self) -> Adaptation:
        cfg = self.config
        return Adaptation(cfg.adapt_optimizer, cfg.scratch_lr, cfg.scratch_steps, cfg.batch_size)
