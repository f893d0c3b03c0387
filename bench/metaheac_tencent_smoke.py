"""Tencent Look-alike sample: MetaHeac stage-1 throughput (first- and second-order) and adaptation time.

    LOOKALIKE_DATA_ROOT=../shared/data .venv/bin/python bench/metaheac_tencent_smoke.py

The sample is positives only (negatives sampled, flagged): it tests the format and code path, not AUC.
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lookalike_models.adapters import tencent
from lookalike_models.catalog import build_scorer
from lookalike_models.contract import read_dataset
from lookalike_models.dataset import encode
from lookalike_models.evaluation import holdout_split

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as tmp:
    d = encode(read_dataset(tencent.build(Path(tmp) / "t")))
    train, held = holdout_split(d.campaigns, d.n_users, 0.2, 0)
    for so in (False, True):
        s = build_scorer("metaheac", {"meta_steps": 50, "second_order": so, "cold_threshold": 100})
        s.fit(d, train)
        t = time.perf_counter()
        n = 0
        for cid in list(held)[:20]:
            s.score(d, train[cid], np.arange(d.n_users))
            n += 1
        print(
            f"second_order={so}: {d.n_users} users, {len(d.campaigns)} campaigns, stage 1 50 steps "
            f"{s.stats.seconds:.1f}s, {s.stats.samples_per_s:,.0f} samples/s, final meta-loss "
            f"{s.stats.final_loss:.3f}, adaptation+scoring {(time.perf_counter() - t) / n:.3f} s/campaign, "
            f"negatives_sampled={s.params()['negatives_sampled']}"
        )
