"""Adapters turning the real public data sets into the data contract.

The data sets' terms forbid republishing, so adapters read them where they lie (``../shared/data`` by
default, or ``$LOOKALIKE_DATA_ROOT``) and write contract folders outside the repository's tracked files.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_root() -> Path:
    """Where the real data sets are: $LOOKALIKE_DATA_ROOT, else ../shared/data beside the repository."""
    return Path(os.environ.get("LOOKALIKE_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
