"""The Dask ``ShardPool``: runs a library function on every shard of a sharded folder, where the shard lies.

Each call is one round of ``client.map`` over shard numbers. A worker loads a shard from the folder (its path
travels, not its rows) and keeps the last ones it loaded (and, on its local disk, the costly state scorers derive
from them: ``lookalike_models/sharded/spill.py``); the function and its (small) arguments are
scattered once per round. Dask re-runs the shards of a worker that died on the workers left
(``retries``); with no worker at all for ``no_workers_timeout_s`` the round raises ``NoDaskWorkers``. Progress:
a Prefect progress artifact and a log line with rate and ETA per round (``ShardProgress``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lookalike_models.sharded.shard_data import LazyShardData, ShardData
from lookalike_models.sharded.spill import spill_dir
from tasks.distributed import ShardProgress, gather_while_workers_live, limit_threads_to_worker

T = TypeVar("T")
_ROUNDS = itertools.count()  # map rounds of this process, across tasks: their parity sets the shard order


class DaskShardPool:
    def __init__(
        self, client, folder: str, version: str, size: tuple[int, int], where: str, no_workers_timeout_s: float
    ):
        """``size``: (shards, users) of the folder; ``version``: its manifest's hash (workers' shard cache key)."""
        self.client, self.folder, self.version, self.where = client, folder, version, where
        self.n_shards, self.n_users = size
        self.no_workers_timeout_s = no_workers_timeout_s
        self.label = "shards"

    def map(self, fn: Callable[..., T], *args: Any) -> list[T]:
        futures, scattered = self.submit(fn, args)
        try:
            return gather_while_workers_live(
                self.client, futures, self.where, self.no_workers_timeout_s, self.progress(fn, len(futures))
            )
        finally:
            release(scattered)

    def map_sum(self, fn: Callable[..., T], *args: Any) -> T:
        """The sum of ``fn``'s results over the shards, added up pairwise on the workers: the caller receives one
        result (e.g. one item Gram matrix, not one per shard)."""
        futures, scattered = self.submit(fn, args)
        level = futures
        while len(level) > 1:  # a partial sum no one holds is freed once added up (a Gram matrix can be GBs)
            pairs = [level[i : i + 2] for i in range(0, len(level), 2)]
            level = [self.client.submit(add, *pair, pure=False) if len(pair) == 2 else pair[0] for pair in pairs]
        try:
            waited = futures + [level[0]]
            return gather_while_workers_live(
                self.client, waited, self.where, self.no_workers_timeout_s, self.progress(fn, len(waited)), level
            )[0]
        finally:
            release(scattered)

    def submit(self, fn: Callable, args: tuple) -> tuple[list, list]:
        """(one future per shard, the scattered arguments)."""
        scattered = self.client.scatter(list(args), broadcast=True, hash=False) if args else []
        # Shard i goes to the same worker every round (loosely: another takes it if that one is gone), so the
        # shards a worker loaded for one round are still in its cache for the next.
        workers = sorted(self.client.scheduler_info()["workers"])
        # Every other round runs the shards in reverse: the shards a worker read last (still in its cache) are
        # the first it needs next, instead of the ones an LRU cache just dropped.
        forward = next(_ROUNDS) % 2 == 0
        order = range(self.n_shards) if forward else range(self.n_shards - 1, -1, -1)
        futures = [
            self.client.submit(
                run_on_shard,
                index,
                fn=fn,
                folder=self.folder,
                version=self.version,
                args=scattered,
                pure=False,
                retries=2,
                **({"workers": [workers[index % len(workers)]], "allow_other_workers": True} if workers else {}),
            )
            for index in order
        ]
        if not forward:
            futures.reverse()  # results in shard order
        return futures, scattered

    def progress(self, fn: Callable, total: int) -> ShardProgress:
        return ShardProgress(total, f"{self.where} ({self.label}: {fn.__name__})")


def add(a, b):
    return a + b


def release(futures: list) -> None:
    """Lets go of a round's futures (the scheduler forgets what no one wants). Not ``client.cancel``: a cancel
    walks the key's dependents, and a dependent no client wants any more trips an assertion in the scheduler
    (distributed 2026.8), which then drops this client's connection (seen in a killed-worker test)."""
    for future in futures:
        future.release()


def run_on_shard(index: int, fn: Callable[..., T], folder: str, version: str, args: list) -> T:
    """On a worker: ``fn(shard, *args)`` for shard ``index`` of ``folder``."""
    limit_threads_to_worker()
    return fn(cached_shard(folder, version, index), *args)


# A worker's loaded shards, newest last, while their arrays fit in LOOKALIKE_SHARD_CACHE_GB (default 2).
_SHARDS: OrderedDict[tuple[str, str, int], ShardData] = OrderedDict()
_SHARDS_LOCK = threading.Lock()


def cached_shard(folder: str, version: str, index: int) -> ShardData:
    """Shard ``index`` of ``folder`` (a ``LazyShardData``: its rows are read on first use), read once per worker
    while it stays in the cache (``version``: a folder rewritten in place is read anew). Before every use, other
    shards are dropped (oldest first) while the cache's arrays pass LOOKALIKE_SHARD_CACHE_GB or the process passes
    half its Dask memory limit, and, if still over, this shard's rows, then what scorers derived from it for
    earlier models: Dask pauses a worker at 80% of its limit, and the cache is memory Dask cannot spill, so an
    unbounded cache pauses every worker (a 10M night stood still)."""
    import gc

    key = (folder, version, index)
    with _SHARDS_LOCK:
        shard = _SHARDS.pop(key, None)
        make_room()
        if shard is not None:
            if over_budget([shard]) and shard.loaded and isinstance(shard, LazyShardData):
                shard.unload()  # its rows first: what was derived from them may be all the next round needs
                gc.collect()
            if over_budget([shard]):
                shard.cache.clear()
                gc.collect()
            _SHARDS[key] = shard
            return shard
    from lookalike_models.sharded.store import open_shard

    # Rows read on first use: a round that needs only state kept on the worker's disk reads none.
    shard = open_shard(folder, index, shard_offsets(folder, version), worker_spill_dir(folder, version, index))
    with _SHARDS_LOCK:
        _SHARDS[key] = shard
    return shard


@lru_cache(maxsize=8)
def shard_offsets(folder: str, version: str) -> np.ndarray:
    """Global index of each shard's first user, and the user count at the end (from the manifest; ``version``
    names the folder's contents, so a folder rewritten in place is read anew)."""
    from lookalike_models.sharded.store import user_offsets

    return user_offsets(folder)


def make_room() -> None:
    """Drop the oldest cached shards (and collect) while over budget (``over_budget``)."""
    import gc

    while _SHARDS and over_budget(list(_SHARDS.values())):
        _SHARDS.popitem(last=False)
        gc.collect()


def over_budget(shards: list[ShardData]) -> bool:
    """The shards' arrays pass LOOKALIKE_SHARD_CACHE_GB (default 2), or this worker passes half its memory limit."""
    budget = float(os.environ.get("LOOKALIKE_SHARD_CACHE_GB", "2")) * 1e9
    limit = worker_memory_limit()
    return sum(shard_bytes(s) for s in shards) > budget or bool(limit and process_rss() > limit / 2)


def worker_spill_dir(folder: str, version: str, index: int) -> Path | None:
    """The shard's state folder in this Dask worker's local directory (removed with the worker), or None off a
    worker or with LOOKALIKE_SHARD_SPILL=0."""
    if os.environ.get("LOOKALIKE_SHARD_SPILL", "1") == "0":
        return None
    try:
        from distributed import get_worker

        return spill_dir(get_worker().local_directory, folder, version, index)
    except (ImportError, ValueError, AttributeError):
        return None


def worker_memory_limit() -> float | None:
    """This Dask worker's memory limit in bytes (None: not on a worker, or no limit)."""
    try:
        from distributed import get_worker

        return get_worker().memory_manager.memory_limit or None
    except (ImportError, ValueError, AttributeError):
        return None


def process_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def shard_bytes(shard: ShardData) -> int:
    """The shard's interaction and field arrays and what scorers derived from them (``shard.cache``)."""
    arrays = []
    if shard.loaded:
        data = shard.data
        arrays += [data.user_idx, data.item_idx, data.weight, data.domain, data.ts, data.users.single]
        arrays += [data.users.continuous, *data.users.multi]
    for entry in shard.cache.values():
        entry = entry[1] if isinstance(entry, tuple) else entry  # (key, value) entries: sharded.exact_models
        values = entry if isinstance(entry, tuple) else vars(entry).values() if hasattr(entry, "__dict__") else [entry]
        for value in values:  # an array, a sparse matrix, a tuple of them or a record holding them
            if hasattr(value, "indptr"):
                arrays += [value.data, value.indices, value.indptr]
            elif isinstance(value, np.ndarray):
                arrays.append(value)
    return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))
