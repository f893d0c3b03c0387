"""Tencent Look-alike sample: MetaHeac stage-1 throughput (first- and second-order) and adaptation time.

    LOOKALIKE_DATA_ROOT=../shared/data .venv/bin/python bench/metaheac_tencent_smoke.py

The sample is positives only (negatives sampled, flagged): it tests the format and code path, not AUC.
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import load_data  # noqa: E402
from lookalike_models.catalog import build_scorer  # noqa: E402
from lookalike_models.evaluation import holdout_split  # noqa: E402

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as tmp:
    d = load_data("tencent", Path(tmp))
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
