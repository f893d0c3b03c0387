"""Resumable runs: tasks cached on their inputs, their own source and the library's source.

A re-run after a failure (or a second run on unchanged input) reuses every task whose inputs and code
are unchanged and starts again at the first one that is not. Outputs live in a content-addressed work
folder, so equal inputs mean equal paths. The folder's generation token is part of the key: deleting the
work folder invalidates the cache instead of returning paths that no longer exist.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy
from pydantic import BaseModel

LIBRARY = Path(__file__).resolve().parents[1] / "lookalike_models"


def stable_hash(*parts: Any, length: int = 12) -> str:
    def plain(obj: Any) -> Any:
        return obj.model_dump(mode="json") if isinstance(obj, BaseModel) else str(obj)

    return hashlib.sha256(json.dumps(parts, default=plain, sort_keys=True).encode()).hexdigest()[:length]


@lru_cache(maxsize=1)
def library_version() -> str:
    """Hash of every library source file: changing a model's code invalidates its cached results."""
    digest = hashlib.sha256()
    for path in sorted(LIBRARY.rglob("*.py")):
        digest.update(path.relative_to(LIBRARY).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def work_generation(work_root: str | Path) -> str:
    token = Path(work_root) / ".generation"
    if not token.exists():
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(uuid.uuid4().hex)
    return token.read_text()


def _code_and_workspace(task_ctx, inputs: dict[str, Any]) -> str:
    work_root = inputs.get("work_root")
    return library_version() + (work_generation(work_root) if work_root else "")


RESUMABLE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_code_and_workspace)
CACHED = {"cache_policy": RESUMABLE, "persist_result": True, "result_serializer": "json"}


def file_fingerprint(paths: list[Path]) -> str:
    """Cheap change detector for input files: names, sizes and modification times (not contents)."""
    stats = []
    for path in sorted(paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()]
    return stable_hash(stats)
