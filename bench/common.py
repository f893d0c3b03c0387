"""What every benchmark script shares: the data sets (through the pipeline's own loader), a timer and the
results-file writer."""

from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from pathlib import Path

from lookalike_models.adapters.options import AmazonOptions, MovieLensOptions
from lookalike_models.config import DataSource
from lookalike_models.dataset import LookalikeData
from lookalike_models.shapes import ShapeConfig
from lookalike_models.sources import load_encoded
from lookalike_models.synthetic import SyntheticConfig

# Derived data shapes (``data.shape``, lookalike_models/shapes.py): name -> (data kind, shape).
# longtail: a seeded sample of users, every item they touched kept (more items than users);
# nopop: each domain's 10% most-engaged items removed (campaign items kept);
# sparse: half the users keep only 1-20 of their organic items (log-uniform), so many held-out seeds have the
# short histories of new users (few do on the full sets).
SHAPES = {
    "movielens_longtail": ("movielens", ShapeConfig(max_users=300)),
    "amazon_longtail": ("amazon", ShapeConfig(max_users=500)),
    "movielens_nopop": ("movielens", ShapeConfig(drop_popular_share=0.1)),
    "amazon_nopop": ("amazon", ShapeConfig(drop_popular_share=0.1)),
    "movielens_sparse": ("movielens", ShapeConfig(sparse_share=0.5, sparse_max_items=20)),
    "amazon_sparse": ("amazon", ShapeConfig(sparse_share=0.5, sparse_max_items=20)),
}


def data_source(
    name: str,
    synthetic: SyntheticConfig | None = None,
    adapter: MovieLensOptions | AmazonOptions | None = None,
    path: str | Path | None = None,
) -> DataSource:
    """The ``DataSource`` of a benchmark data name: a kind (synthetic, movielens, amazon, tencent) or a shape
    of one (``SHAPES``, e.g. movielens_longtail). ``adapter``: the real set's adapter knobs (``data.<kind>``);
    ``path``: its raw folder (default: under the data root)."""
    kind, shape = SHAPES.get(name, (name, ShapeConfig()))
    knobs = {kind: adapter} if adapter is not None else {}
    return DataSource(kind=kind, path=str(path or ""), synthetic=synthetic or SyntheticConfig(), shape=shape, **knobs)


def load_source(source: DataSource, workdir: Path) -> LookalikeData:
    """A data source exactly as the nightly flow sees it (``sources.load_encoded``: validated, shaped,
    encoded, the campaigns' own items removed), its contract folder written under ``workdir``."""
    return load_encoded(source, Path(workdir) / source.kind)


def load_data(
    kind: str,
    workdir: Path,
    synthetic: SyntheticConfig | None = None,
    adapter: MovieLensOptions | AmazonOptions | None = None,
) -> LookalikeData:
    """``load_source`` of a benchmark data name (``data_source``): synthetic, movielens, amazon, tencent, or a
    ``SHAPES`` name."""
    return load_source(data_source(kind, synthetic, adapter), workdir)


def scale_synthetic(n_users: int, campaigns: int = 100, interactions_per_user: float = 30.0) -> SyntheticConfig:
    """The synthetic set the scale benchmarks share: n_items = max(5000, n_users / 20), ~20 distinct items
    per user, campaigns of up to 2000 seeds, seed 3 (so every scale table measures the same data)."""
    return SyntheticConfig(
        n_users=n_users,
        n_items=max(5000, n_users // 20),
        n_campaigns=campaigns,
        interactions_per_user=interactions_per_user,
        max_seeds=2000,
        seed=3,
    )


@contextmanager
def timed(into: dict, key: str):
    """``with timed(times, "fit"): ...`` stores the block's wall seconds in ``times["fit"]``."""
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def comparison_section(kind: str, data: LookalikeData, per_campaign, comparison, metric: str, seconds: float) -> list:
    """A results file's per-data-set heading and its two comparison tables (``metric`` and GAUC), each model
    minus the reference with the paired CI (``protocol.compare_to_reference``'s frame)."""
    from lookalike_models.protocol import format_comparison

    return [
        f"## {kind}: {data.n_users} users, {data.n_items} items, "
        f"{per_campaign['campaign_id'].n_unique()} evaluated campaigns ({seconds:.0f} s)",
        "",
        f"{metric}:",
        "",
        format_comparison(comparison, metric),
        "",
        "GAUC:",
        "",
        format_comparison(comparison, "auc"),
        "",
    ]


def machine() -> str:
    return f"{platform.machine()} {platform.system()}, 2 cores (shared with other jobs unless said otherwise)"


def write_results(path: Path | None, text: str) -> None:
    """Print the results and, with ``--out``, write them (the BENCHMARKS.md tables come from these files)."""
    print(text)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
