"""Where the Pinterest ensemble's fit spends its time, stage by stage, against each stage's physical floor, idle
or beside busy processes (the nightly shares machines).

    python bench/pinterest_profile.py --users 20000 100000 1000000
    python bench/pinterest_profile.py --users 20000 --busy 2        # beside two CPU-bound processes
    python bench/pinterest_profile.py --users 20000 --busy 0 2 --out bench/results/pinterest_profile.md

The default ``pinterest_ensemble`` is fitted on synthetic data (20,000 users: ``make run``'s default data;
larger sizes: ``bench.common.scale_synthetic``, 100 campaigns) and scored on every campaign; library functions
are wrapped with timers, so each stage's wall and CPU seconds are inclusive (a stage that calls another counts
it too; the table says which). ``--busy N`` starts N processes that spin on one core each for the whole
measurement; fair share on a 2-core box beside 2 of them is about 2x the idle time. Each stage's floor is the
arithmetic (or bytes) it must do at this machine's measured one-core GEMM rate and copy bandwidth: a lower
bound, not a target (Python and sparse gathers run far below GEMM rate).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import machine, write_results  # noqa: E402
from bench.stage_breakdown import machine_rates, peak_rss_gb, reset_peak  # noqa: E402

# stage label -> (module, attribute path) of the library function it times; indented labels run inside the one above
STAGES = [
    (
        "encoder: train (SVD init, epochs, early stop, fold-in, embed all)",
        "lookalike_models.pinterest.embedding",
        "train_encoder",
    ),
    ("  encoder: SVD warm start", "lookalike_models.pinterest.encoder", "init_from_svd"),
    ("  encoder: training steps", "lookalike_models.pinterest.encoder", "step_loss"),
    ("  encoder: embed every user", "lookalike_models.pinterest.encoder", "encode_users"),
    ("  encoder: transfer task (early stopping)", "lookalike_models.pinterest.encoder", "transfer_error"),
    (
        "affinity MLP: fit + epoch choice (x2: final, blend cut)",
        "lookalike_models.pinterest.affinity",
        "AffinityMLPScorer.fit_campaigns",
    ),
    (
        "classifier: C search on the inner cut",
        "lookalike_models.pinterest.classifier",
        "PinterestClassifierScorer.choose_C",
    ),
    ("classifier: per-campaign fits (all)", "lookalike_models.pinterest.classifier", "fit_campaign"),
    ("item_ridge: Gram matrix", "lookalike_models.item_ridge", "item_gram"),
    ("item_ridge: strength search", "lookalike_models.item_ridge", "choose_strength"),
    ("item_ridge: final factor", "lookalike_models.item_ridge", "ItemRidgeScorer.factorise"),
    (
        "blend validation (members score the cuts)",
        "lookalike_models.pinterest.ensemble",
        "PinterestEnsembleScorer._fold_results",
    ),
]


class Timers:
    def __init__(self):
        self.wall, self.cpu, self.calls = defaultdict(float), defaultdict(float), defaultdict(int)

    def wrap(self, label: str, module: str, path: str) -> None:
        import importlib

        owner = importlib.import_module(module)
        parts = path.split(".")
        for part in parts[:-1]:
            owner = getattr(owner, part)
        original = getattr(owner, parts[-1])

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[label] += time.perf_counter() - wall
                self.cpu[label] += time.process_time() - cpu
                self.calls[label] += 1

        setattr(owner, parts[-1], timed)


def clear_process_caches() -> None:
    """Each profile fits from scratch: no encoder, factor or strength choice kept from an earlier one."""
    from lookalike_models import item_ridge
    from lookalike_models.pinterest import embedding

    embedding._ENCODERS.clear()
    item_ridge._FACTORS.clear()
    item_ridge._STRENGTHS.clear()


def spin() -> None:
    while True:
        pass


def floors(data, ens, gflops: float, gbs: float) -> dict[str, float]:
    """Seconds of unavoidable arithmetic per stage at this machine's one-core rates (see module doc)."""
    enc = ens.config.encoder
    d, k, m = enc.dim, enc.negatives, enc.positives_per_user
    nnz = data.user_idx.size
    per_epoch = min(data.n_users, enc.users_per_epoch or data.n_users)
    fitted = ens.members[0].fitted
    epochs = len(fitted.history) - 1
    avg_len = nnz / max(data.n_users, 1)
    # forward + backward ~ 3x forward; forward per example: d x (1 + k) dot products and the bag's d x len adds
    step_flops = epochs * per_epoch * (m * 6 * d * (1 + k) + 6 * d * avg_len)
    ridge = next(m for m in ens.members if m.name == "item_ridge")
    n_kept = ridge.keep.size
    cholesky = n_kept**3 / 3
    gram_flops = float(np.sum(np.diff(ridge.features.indptr).astype(np.float64) ** 2))
    n_campaigns = len(data.campaigns)
    mlp = ens.members[0]
    clf = next(m for m in ens.members if m.name == "pinterest_classifier")
    n_fits = len(clf.models) + n_campaigns * (len(clf.config.C_grid) - 1)  # kept fits + the C search's others
    out = {
        "  encoder: training steps": step_flops / (gflops * 1e9),
        "  encoder: embed every user": (epochs + 2) * 2 * nnz * d / (gflops * 1e9),
        "item_ridge: Gram matrix": gram_flops / (gflops * 1e9),
        "item_ridge: strength search": (len(ridge.config.strength_grid) + 2) * cholesky / 2 / (gflops * 1e9),
        "item_ridge: final factor": cholesky * 2 / (gflops * 1e9),  # float64 runs at about half the float32 rate
        # ~10 liblinear passes over the rows a fit reads (seeds + capped negatives), 12 bytes a nonzero
        "classifier: per-campaign fits (all)": n_fits
        * min(data.n_users, clf.config.max_negatives + 2000)
        * (nnz / data.n_users)
        * 12
        * 10
        / (gbs * 1e9),
        "affinity MLP: fit + epoch choice (x2: final, blend cut)": 2
        * getattr(mlp, "best_epoch", 1)
        * sum(s.size for s in data.campaigns.values())
        * 8
        * 6
        * (4 * d + 1)
        * mlp.config.hidden
        / (gflops * 1e9),
    }
    return out


def profile(n_users: int, busy: int, tmp: Path, gflops: float, gbs: float) -> list[str]:
    from bench.common import scale_synthetic
    from lookalike_models.catalog import build_scorer
    from lookalike_models.config import DataSource, load_config
    from lookalike_models.evaluation import holdout_split
    from lookalike_models.sources import load_encoded

    synthetic = load_config().data.synthetic if n_users == 20_000 else scale_synthetic(n_users)
    data = load_encoded(DataSource(kind="synthetic", synthetic=synthetic), tmp / f"u{n_users}")
    train, _ = holdout_split(data.campaigns, data.n_users, 0.1, 0)
    timers = Timers()
    for label, module, path in STAGES:
        timers.wrap(label, module, path)
    clear_process_caches()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
    for p in spinners:
        p.start()
    time.sleep(1.0 if busy else 0.0)
    try:
        reset_peak()
        ens = build_scorer("pinterest_ensemble")
        wall, cpu = time.perf_counter(), time.process_time()
        ens.fit(data, train)
        fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
        everyone = np.arange(data.n_users)
        wall = time.perf_counter()
        for seeds in train.values():
            ens.score(data, seeds, everyone)
        score_wall = time.perf_counter() - wall
    finally:
        for p in spinners:
            p.terminate()
    peak = peak_rss_gb()
    floor = floors(data, ens, gflops, gbs)
    lines = [
        f"### {data.n_users:,} users, {data.n_items:,} items, {data.user_idx.size:,} interactions, "
        f"{len(data.campaigns)} campaigns; {busy} busy process(es) beside",
        "",
        f"Fit {fit_wall:.1f} s wall, {fit_cpu:.1f} s CPU; scoring every campaign once {score_wall:.1f} s; "
        f"peak RSS {peak:.1f} GB; blend chosen {ens.params().get('blend_overall')}; "
        f"member choices { {k: v for k, v in ens.params().items() if k.startswith('member')} }.",
        "",
        "| stage (inclusive) | calls | wall s | CPU s | floor s |",
        "|---|---|---|---|---|",
    ]
    for label, _, _ in STAGES:
        if timers.calls[label]:
            f = floor.get(label)
            lines.append(
                f"| {label} | {timers.calls[label]} | {timers.wall[label]:.1f} | {timers.cpu[label]:.1f} | "
                f"{f'{f:.2f}' if f is not None else '-'} |"
            )
    print("\n".join(lines), flush=True)
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[20_000])
    parser.add_argument("--busy", type=int, nargs="+", default=[0], help="busy processes beside, one run per value")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    gflops, gbs = machine_rates()
    out = [
        "# Pinterest ensemble: per-stage profile",
        "",
        f"Command: `python bench/pinterest_profile.py {' '.join(sys.argv[1:])}`; machine: {machine()}, "
        f"{os.cpu_count()} cores; one-core float64 GEMM {gflops:.0f} GFLOP/s, copy {gbs:.1f} GB/s.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for n_users in args.users:
            for busy in args.busy:
                out += profile(n_users, busy, Path(tmp), gflops, gbs)
    write_results(args.out, "\n".join(out))


if __name__ == "__main__":
    main()
