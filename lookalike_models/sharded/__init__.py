"""The sharded data plane (issue 21): users split into shards that each fit in one process, fits written as
map-reduce over shards, scoring and evaluation where each shard lies.

- ``shard_data.py``: one shard in memory (``ShardData``: its users, the global item index), the pool that runs
  a function on every shard (``ShardPool``; ``LocalShardPool`` in one process, the Dask one in ``tasks/``).
- ``store.py``: the on-disk layout (a folder of user-hash-partitioned Parquet shards plus small global files).
- ``scorer.py``: what a model that runs on shards provides (``ShardedScorer``).
- ``scoring.py``: per-shard top lists and held-out scores, merged into the single-process results.

Global user index: shard-major (shard 0's users, sorted by id, then shard 1's, ...). A sharded folder read
whole for the single-process night (``store.load_whole``) has the same order, so both nights see the same data.
"""
