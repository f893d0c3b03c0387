"""The item Gram matrix of ``item_ridge``, and how tonight's is built from last night's.

G = Xᵀ X over binary user x kept-item rows counts, for each pair of kept items, the users who touched
both. Its entries are integers, exact in float64 whatever the order of summation. So tonight's G equals,
bit for bit, last night's G minus the rows of users whose activity changed (or who left), plus their new
rows, with whole columns recomputed only for items that entered the kept set. Same G, same Cholesky factor
(one BLAS thread), same weights, same audiences as a fit from scratch, at the cost of the changed rows.

What the next night needs is kept in a model folder's ``refresh_state/`` subfolder: the integer Gram, the
kept items' ids, each user's binary row and activity fingerprint. It is a cache for the next fit, not part
of the tracked model (``tasks/mlflow_logging.py`` leaves it out of MLflow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from lookalike_models.contract import ITEM_ID
from lookalike_models.dataset import LookalikeData
from lookalike_models.io import atomic_directory
from lookalike_models.user_state import USER_STATE, load_user_state, match_previous, state_mismatch, user_state


@dataclass
class GramState:
    """One night's Gram matrix and what it was built from."""

    gram: np.ndarray  # int32 [n_kept, n_kept]: co-occurrence counts
    kept_item_ids: pl.Series  # item id of each Gram row
    rows: sp.csr_matrix  # binary [n_users, n_kept]: the users' rows then
    users: pl.DataFrame  # user_state: row i of ``rows`` is this user, with this activity fingerprint


def item_gram(features: sp.csr_matrix, block: int = 1024) -> np.ndarray:
    """float64 [n_kept, n_kept]: Xᵀ X, built ``block`` columns at a time (at 1M users the whole sparse
    product of thousands of co-occurring items would briefly need several times the dense matrix)."""
    n = features.shape[1]
    transposed, columns = features.T.tocsr(), features.tocsc()
    gram = np.empty((n, n))
    for lo in range(0, n, block):
        gram[:, lo : lo + block] = (transposed @ columns[:, lo : lo + block]).toarray()
    return gram


def save_state(folder: Path, state: GramState) -> None:
    """Write ``state`` to ``folder`` whole or not at all (a crash leaves no half state for tomorrow)."""
    with atomic_directory(folder) as tmp:
        np.save(tmp / "gram.npy", state.gram, allow_pickle=False)
        np.savez(tmp / "rows.npz", indptr=state.rows.indptr, indices=state.rows.indices.astype(np.int32))
        pl.DataFrame({ITEM_ID: state.kept_item_ids}).write_parquet(tmp / "kept_items.parquet")
        state.users.write_parquet(tmp / USER_STATE)


def load_state(folder: Path) -> GramState | None:
    """The state ``save_state`` wrote, or None when there is none (an older model folder, a cold night)."""
    folder = Path(folder)
    if not (folder / "gram.npy").exists():
        return None
    gram = np.load(folder / "gram.npy", allow_pickle=False)
    kept = pl.read_parquet(folder / "kept_items.parquet")[ITEM_ID]
    users = load_user_state(folder)
    with np.load(folder / "rows.npz", allow_pickle=False) as npz:
        indptr, indices = npz["indptr"], npz["indices"]
    rows = sp.csr_matrix((np.ones(indices.size), indices, indptr), shape=(indptr.size - 1, len(kept)))
    return GramState(gram=gram, kept_item_ids=kept, rows=rows, users=users)


def state_of(data: LookalikeData, keep: np.ndarray, features: sp.csr_matrix, gram: np.ndarray) -> GramState:
    return GramState(
        gram=gram.astype(np.int32),
        kept_item_ids=data.item_ids.gather(keep),
        rows=features,
        users=user_state(data),
    )


def updated_gram(
    previous: GramState, data: LookalikeData, keep: np.ndarray, features: sp.csr_matrix
) -> tuple[np.ndarray, int] | None:
    """(float64 Gram of ``features``, users whose rows were applied) from ``previous``, equal bit for bit
    to ``item_gram(features)``; None when ``previous`` cannot be matched to tonight's data."""
    users = previous.users
    if users is None or state_mismatch(data, users) or users.height != previous.rows.shape[0]:
        return None
    try:
        new_position = old_to_new_positions(previous.kept_item_ids, data.item_ids.gather(keep))
    except pl.exceptions.PolarsError:  # item ids changed type: nothing to carry over
        return None
    n = keep.size
    surviving_old = np.flatnonzero(new_position >= 0)
    surviving_new = new_position[surviving_old]
    entering = np.ones(n, bool)
    entering[surviving_new] = False

    gram = np.zeros((n, n))
    if surviving_old.size == n and np.array_equal(surviving_new, np.arange(n)):
        gram[:] = previous.gram
    else:
        gram[np.ix_(surviving_new, surviving_new)] = previous.gram[np.ix_(surviving_old, surviving_old)]

    previous_row, unchanged = match_previous(data, previous.users)
    carried = np.zeros(previous.rows.shape[0], bool)
    carried[previous_row[unchanged]] = True
    gone = remap_columns(previous.rows[np.flatnonzero(~carried)], new_position, n)  # yesterday's rows, out
    changed = np.flatnonzero(~unchanged)
    added = remap_columns(features[changed], np.where(entering, -1, np.arange(n)), n)  # tonight's rows, in
    delta = ((added.T @ added) - (gone.T @ gone)).tocoo()
    delta.sum_duplicates()
    gram[delta.row, delta.col] += delta.data

    new_items = np.flatnonzero(entering)
    if new_items.size:  # items new to the kept set: their whole columns, from tonight's rows
        columns = (features.T @ features[:, new_items]).toarray()
        gram[:, new_items] = columns
        gram[new_items, :] = columns.T
    return gram, int(changed.size)


def old_to_new_positions(old_ids: pl.Series, new_ids: pl.Series) -> np.ndarray:
    """int64 [n_old]: tonight's position of each of last night's kept items, -1 where it left the set."""
    tonight = pl.DataFrame({ITEM_ID: new_ids, "position": np.arange(len(new_ids), dtype=np.int64)})
    joined = pl.DataFrame({ITEM_ID: old_ids}).join(tonight, on=ITEM_ID, how="left", maintain_order="left")
    return joined["position"].fill_null(-1).to_numpy()


def remap_columns(rows: sp.csr_matrix, new_position: np.ndarray, n: int) -> sp.csr_matrix:
    """``rows`` with column j moved to ``new_position[j]`` (dropped where -1), as n columns."""
    coo = rows.tocoo()
    column = new_position[coo.col]
    kept = column >= 0
    return sp.csr_matrix((coo.data[kept], (coo.row[kept], column[kept])), shape=(rows.shape[0], n))
