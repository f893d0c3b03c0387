"""Tasks around the published audiences: moving a run's staged audiences into place, the run whose audiences
are live, and clearing what runs killed while publishing left behind."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from lookalike_models.io import copy_file_atomic
from lookalike_models.publishing import audience_path, mark_complete, mark_latest
from tasks.retrying import retry_on_io_error


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_on_io_error)
def publish_audiences(staged: dict[str, str], output_root: str, run_id: str) -> dict[str, str]:
    """Move the staged audiences into the run-keyed, campaign-partitioned layout, then mark LATEST.
    Each file is renamed into place, so readers never see a partial audience. Returns campaign_id -> the
    published file."""
    root = Path(output_root) / "audiences"
    published = {}
    for cid, path in sorted(staged.items()):
        published[cid] = str(copy_file_atomic(path, audience_path(root, run_id, cid)))
    if published:
        mark_complete(root, run_id)  # the run folder is whole: a later clean-up never takes it for a leftover
        mark_latest(root, run_id)
    get_run_logger().info("published %d audiences under %s", len(published), root / f"run_id={run_id}")
    return published


@task
def previous_published_run(output_root: str) -> str | None:
    """The run whose audiences are live now (read before this run moves LATEST)."""
    from lookalike_models.publishing import read_latest

    return read_latest(Path(output_root) / "audiences")


@task
def remove_run_leftovers(audiences_root: str) -> list[str]:
    """Under the output root's lock: delete what runs killed while publishing left under ``audiences_root``
    (temporary files, run folders LATEST never pointed to); see ``publishing.leftovers``."""
    from lookalike_models.publishing import remove_leftovers

    removed = [str(p) for p in remove_leftovers(audiences_root)]
    if removed:
        get_run_logger().warning(
            "removed %d leftovers of killed runs under %s: %s",
            len(removed),
            audiences_root,
            ", ".join(Path(p).name for p in removed[:5]) + (" ..." if len(removed) > 5 else ""),
        )
    return removed


def run_audiences_dir(output_root: str, run_id: str) -> str:
    """The absolute folder of a run's published audiences."""
    return str((Path(output_root) / "audiences" / f"run_id={run_id}").resolve())
