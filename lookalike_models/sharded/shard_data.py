"""One shard of users in memory, and the pool that maps a function over every shard.

A shard is an ordinary ``LookalikeData`` restricted to a contiguous range of global user indices
[``offset``, ``offset + n_users``): its own users (local index = global - offset), the *global* item index,
its users' interactions and features. It holds no campaigns: seed lists are global (``CampaignSeeds`` in
global user indices) and passed to whatever scores a shard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import polars as pl

from lookalike_models.dataset import LookalikeData, UserFields

T = TypeVar("T")


@dataclass
class ShardData:
    index: int  # shard number
    offset: int  # global user index of the shard's first user
    data: LookalikeData  # the shard's users (local index), global items, no campaigns
    # What scorers derive from the shard's rows (e.g. TF-IDF rows for a given idf), kept while the shard stays
    # loaded: one campaign after another scores the same shard. Key: (what, identity of its inputs).
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    # A folder on the worker's local disk for state too costly to recompute each time the shard is read again
    # (``spill.py``); None: nothing spilled (one process, tests).
    spill: Path | None = field(default=None, repr=False, compare=False)

    @property
    def n_users(self) -> int:
        return self.data.n_users

    @property
    def stop(self) -> int:
        return self.offset + self.n_users

    @property
    def loaded(self) -> bool:
        """Whether ``data`` is in memory (always, but for a ``LazyShardData`` not read yet)."""
        return True

    def local(self, users: np.ndarray) -> np.ndarray:
        """Local indices of the global ``users`` that lie in this shard (others dropped), in their order."""
        users = np.asarray(users, np.int64)
        return users[(users >= self.offset) & (users < self.stop)] - self.offset

    def global_index(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(local, np.int64) + self.offset


class LazyShardData(ShardData):
    """A shard whose rows are read (``load()``) on the first use of ``data``: a function that needs only what a
    scorer derived from the shard and kept on disk (``spill``) never reads them (a worker that re-read its
    shards for every gathering round of a fit spent ~70% of that fit reading them, at 10M users)."""

    def __init__(self, index: int, offset: int, n_users: int, load: Callable[[], LookalikeData], spill: Path | None):
        self.index, self.offset, self.cache, self.spill = index, offset, {}, spill
        self._n_users, self._load, self._data = n_users, load, None
        self._lock = threading.Lock()

    @property
    def data(self) -> LookalikeData:
        with self._lock:  # two threads of a worker may ask for the same shard
            if self._data is None:
                self._data = self._load()
                if self._data.n_users != self._n_users:
                    raise ValueError(f"shard {self.index}: {self._data.n_users} users read, {self._n_users} expected")
            return self._data

    @property
    def n_users(self) -> int:
        return self._n_users

    @property
    def loaded(self) -> bool:
        return self._data is not None

    def unload(self) -> None:
        """Let the rows go (read again on next use); what was derived from them stays in ``cache``."""
        with self._lock:
            self._data = None

    def __repr__(self) -> str:  # the dataclass's would read the rows
        return f"LazyShardData(index={self.index}, offset={self.offset}, n_users={self._n_users}, loaded={self.loaded})"


class ShardPool(Protocol):
    """Runs ``fn(shard, *args)`` on every shard, where the shard lies; results in shard order. ``fn`` must be a
    module-level function (sent by reference to other processes) and its arguments small and picklable."""

    n_users: int
    n_shards: int

    def map(self, fn: Callable[..., T], *args: Any) -> list[T]: ...

    def map_sum(self, fn: Callable[..., T], *args: Any) -> T:
        """The sum of ``fn(shard, *args)`` over the shards (e.g. a Gram matrix per shard): one result comes back."""
        ...


class LocalShardPool:
    """Every shard in this process (tests, small data, the reference a Dask pool must equal)."""

    def __init__(self, shards: Sequence[ShardData]):
        self.shards = list(shards)
        self.n_shards = len(self.shards)
        self.n_users = sum(s.n_users for s in self.shards)

    def map(self, fn: Callable[..., T], *args: Any) -> list[T]:
        return [fn(shard, *args) for shard in self.shards]

    def map_sum(self, fn: Callable[..., T], *args: Any) -> T:
        parts = self.map(fn, *args)
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total


def subset_users(data: LookalikeData, users: np.ndarray) -> LookalikeData:
    """``data`` restricted to the sorted local ``users`` (their interactions and fields); no campaigns."""
    users = np.asarray(users, np.int64)
    position = np.full(data.n_users, -1, np.int64)
    position[users] = np.arange(users.size)
    keep = position[data.user_idx] >= 0
    fields = data.users
    return replace(
        data,
        user_ids=data.user_ids.gather(users),
        user_idx=position[data.user_idx[keep]].astype(np.int32),
        item_idx=data.item_idx[keep],
        weight=data.weight[keep],
        domain=data.domain[keep],
        ts=None if data.ts is None else data.ts[keep],
        users=replace(
            fields,
            single=fields.single[users],
            multi=[m[users] for m in fields.multi],
            continuous=fields.continuous[users],
        ),
        campaigns={},
        campaign_problems={},
    )


def split_into_shards(data: LookalikeData, n_shards: int) -> list[ShardData]:
    """``data``'s users cut into ``n_shards`` contiguous ranges (tests: the sharded path on in-memory data)."""
    edges = np.linspace(0, data.n_users, n_shards + 1).astype(np.int64)
    return [
        ShardData(i, int(lo), subset_users(data, np.arange(lo, hi)))
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
        if hi > lo
    ]


def concat_data(parts: Sequence[LookalikeData]) -> LookalikeData:
    """Shards (global item index each) joined in order into one ``LookalikeData``; multi-valued fields padded
    to the widest shard's width. Campaigns, problems and campaign items are the first part's (global)."""
    first = parts[0]
    offsets = np.cumsum([0] + [p.n_users for p in parts])
    widths = [max(p.users.multi[j].shape[1] for p in parts) for j in range(len(first.users.multi))]

    def padded(block: np.ndarray, width: int) -> np.ndarray:
        return np.pad(block, ((0, 0), (0, width - block.shape[1])))

    users = UserFields(
        first.users.names_single,
        first.users.names_multi,
        first.users.names_continuous,
        np.concatenate([p.users.single for p in parts]),
        first.users.single_sizes,
        [np.concatenate([padded(p.users.multi[j], w) for p in parts]) for j, w in enumerate(widths)],
        first.users.multi_sizes,
        np.concatenate([p.users.continuous for p in parts]),
    )
    return replace(
        first,
        user_ids=pl.concat([p.user_ids for p in parts]),
        user_idx=np.concatenate([p.user_idx.astype(np.int64) + o for p, o in zip(parts, offsets)]).astype(np.int32),
        item_idx=np.concatenate([p.item_idx for p in parts]),
        weight=np.concatenate([p.weight for p in parts]),
        domain=np.concatenate([p.domain for p in parts]),
        ts=None if first.ts is None else np.concatenate([p.ts for p in parts]),
        users=users,
    )
