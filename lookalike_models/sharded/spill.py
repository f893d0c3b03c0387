"""Per-shard derived state kept on a worker's local disk, so a shard that left the worker's memory cache does not
recompute it.

MinHash signatures take ~6 s per 250k-user shard and 256 MB with their band keys: a worker's 2 GB cache held
only some of its 20 shards at 10M users (10-13 while item_logreg fitted), so a 40-shard night recomputed them
on every round (prepare, evaluation, both staging passes). Reading them back from the worker's scratch folder
takes ~0.6 s.

Only arrays, CSR matrices and tuples of them are kept, as ``.npy`` files read with ``allow_pickle=False``:
nothing a file holds can run code. A folder is written under a temporary name and renamed into place, so a
half-written entry is never read. One entry per (shard, what): a new key replaces the old one's files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

MIN_FREE_BYTES = 2e9  # never fill a worker's disk for a cache: below this much free space, nothing is written


def spill_dir(root: str | Path, folder: str, version: str, index: int) -> Path:
    """Where shard ``index`` of the sharded ``folder`` (manifest ``version``) keeps its state under ``root``."""
    name = hashlib.sha1(f"{folder}\0{version}".encode()).hexdigest()[:16]
    return Path(root) / "lookalike-shard-state" / name / f"{index:05d}"


def entry_path(shard_dir: Path, name: str, key: Hashable) -> Path:
    # repr of the key (a frozen dataclass of ints, a digest string): the same in every process.
    return shard_dir / f"{name}-{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}"


def load(shard_dir: Path, name: str, key: Hashable):
    """The value kept for ``name`` and ``key`` (as ``save`` was given it), or None."""
    path = entry_path(shard_dir, name, key)
    if not (path / "parts.json").exists():
        return None
    layout = json.loads((path / "parts.json").read_text())
    files = iter(sorted(path.glob("*.npy"), key=lambda f: int(f.stem)))

    def read() -> np.ndarray:
        return np.load(next(files), allow_pickle=False)

    parts = []
    for part in layout["parts"]:
        if part == "none":
            parts.append(None)
        elif part == "array":
            parts.append(read())
        else:  # [rows, columns] of a CSR matrix: its data, indices and indptr
            data, indices, indptr = read(), read(), read()
            parts.append(sp.csr_matrix((data, indices, indptr), shape=tuple(part)))
    return parts[0] if layout["single"] else tuple(parts)


def save(shard_dir: Path, name: str, key: Hashable, value) -> bool:
    """Keep ``value`` (an array, a CSR matrix, or a tuple of them and None) for ``name``/``key``, replacing other
    keys of ``name``. Returns False, writing nothing, for any other value or when the disk is nearly full."""
    single = not isinstance(value, tuple)
    parts = (value,) if single else value
    layout, arrays = [], []
    for part in parts:
        if part is None:
            layout.append("none")
        elif isinstance(part, np.ndarray) and part.dtype != object:
            layout.append("array")
            arrays.append(part)
        elif sp.issparse(part) and part.format == "csr":
            layout.append(list(part.shape))
            arrays += [part.data, part.indices, part.indptr]
        else:
            return False
    shard_dir.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(shard_dir).free < MIN_FREE_BYTES + 2 * sum(a.nbytes for a in arrays):
        return False
    path = entry_path(shard_dir, name, key)
    for stale in shard_dir.glob(f"{name}-*"):
        if stale != path:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = shard_dir / f".tmp-{name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    for i, array in enumerate(arrays):
        np.save(tmp / f"{i}.npy", array, allow_pickle=False)
    (tmp / "parts.json").write_text(json.dumps({"single": single, "parts": layout}))
    try:
        os.rename(tmp, path)
    except OSError:  # another thread of this worker kept the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
    return True
