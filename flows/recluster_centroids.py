"""RALM's fast path between nightly runs (the paper refreshes every few minutes): as seed lists grow,
re-cluster the live model's per-campaign centroids so serving reflects the new seeds without retraining.

Run it on its own schedule (prefect.yaml: deployment ``recluster``, one run at a time, because it rewrites
the model's centroid file) or by hand: ``lookalike recluster --seeds seeds.parquet``.
"""

from __future__ import annotations

from prefect import flow

from lookalike_models.config import ReclusterConfig
from tasks.recluster import current_seeds, recluster_model
from tasks.refresh import live_models
from tasks.results import ReclusterResult


@flow(name="recluster-centroids")
def recluster_centroids(config: ReclusterConfig) -> dict[str, ReclusterResult]:
    live = live_models(config.output_root)
    campaigns = current_seeds(config.seeds_path, live.data_dir)
    return {
        name: recluster_model(live.models[name], live.data_dir, live.specs[name], campaigns)
        for name in config.models
        if name in live.models and live.specs[name].model in ("ralm", "ralm_average")
    }


if __name__ == "__main__":
    import sys

    recluster_centroids(ReclusterConfig(seeds_path=sys.argv[1]))
