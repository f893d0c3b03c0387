"""Random-hyperplane (SimHash) LSH over user embeddings: Pinterest act-alike stage 2 (deWet & Ou, KDD 2019).

``n_bits`` random hyperplanes cut the embedding space into ``2^n_bits`` regions; a user's region is the
bit pattern of the signs of its projections. ``n_partitions`` independent sets of hyperplanes give
independent partitions. Everything is one matrix product and a bit-pack, for all users at once.

Scoring a seed list (the paper's scorer):
  - voting score of a region = number of seeds in it;
  - density score of a region = seeds in it / all users in it (corrects for regions that are crowded
    whatever the campaign; the paper prefers it);
  - regions with fewer than ``min_region_seeds`` seeds or ``min_region_users`` users are dropped;
  - a user's score is the mean over partitions of its regions' scores (0 for a dropped region).
A campaign is therefore a small table {(partition, region) -> score}; scoring every user is a lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_BITS = 30


def default_bits(n_users: int, users_per_region: float) -> int:
    """Bits so that an average region holds about ``users_per_region`` users."""
    return int(np.clip(round(np.log2(max(n_users, 2) / users_per_region)), 1, MAX_BITS))


def random_hyperplanes(dim: int, n_partitions: int, n_bits: int, seed: int = 0) -> np.ndarray:
    """float32 [n_partitions, n_bits, dim] Gaussian normals (isotropic: a uniform random direction)."""
    if not 1 <= n_bits <= MAX_BITS:
        raise ValueError(f"n_bits must be in 1..{MAX_BITS}, got {n_bits}")
    return np.random.default_rng(seed).standard_normal((n_partitions, n_bits, dim)).astype(np.float32)


def region_codes(embeddings: np.ndarray, planes: np.ndarray, chunk: int = 262_144) -> np.ndarray:
    """int64 [n_users, n_partitions]: each user's region id in each partition."""
    n_part, n_bits, dim = planes.shape
    flat = planes.reshape(n_part * n_bits, dim).T  # [dim, P*b]
    weights = 1 << np.arange(n_bits, dtype=np.int64)
    out = np.empty((embeddings.shape[0], n_part), np.int64)
    for lo in range(0, embeddings.shape[0], chunk):
        bits = (embeddings[lo : lo + chunk] @ flat > 0).reshape(-1, n_part, n_bits)
        out[lo : lo + chunk] = bits.astype(np.int64) @ weights
    return out


def _count_by_region(codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per partition: (sorted regions present, users in each)."""
    return [np.unique(codes[:, p], return_counts=True) for p in range(codes.shape[1])]


@dataclass
class RegionTable:
    """One campaign's representation: scored regions per partition (a few KB, whatever the population)."""

    partition: np.ndarray  # int16 [n_regions]
    region: np.ndarray  # int64 [n_regions]
    score: np.ndarray  # float32 [n_regions]
    n_partitions: int

    def save(self, path: str | Path) -> Path:
        np.savez(
            path,
            partition=self.partition,
            region=self.region,
            score=self.score,
            n_partitions=np.array(self.n_partitions),
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> RegionTable:
        with np.load(path, allow_pickle=False) as npz:
            return cls(npz["partition"], npz["region"], npz["score"], int(npz["n_partitions"]))

    def lookup(self, codes: np.ndarray, n_bits: int | None = None) -> np.ndarray:
        """float32 [n]: mean over partitions of the scores of the regions in ``codes`` [n, n_partitions].

        With ``n_bits`` up to 22 each partition's table is spread into a dense array (a gather per user);
        otherwise regions are found by binary search."""
        total = np.zeros(codes.shape[0], np.float32)
        for p in range(self.n_partitions):
            sel = self.partition == p
            regions, scores = self.region[sel], self.score[sel]
            if regions.size == 0:
                continue
            if n_bits is not None and n_bits <= 22:
                dense = np.zeros(1 << n_bits, np.float32)
                dense[regions] = scores
                total += dense[codes[:, p]]
                continue
            order = np.argsort(regions)
            regions, scores = regions[order], scores[order]
            pos = np.minimum(np.searchsorted(regions, codes[:, p]), regions.size - 1)
            total += np.where(regions[pos] == codes[:, p], scores[pos], 0.0).astype(np.float32)
        return total / self.n_partitions

    def covered(self, codes: np.ndarray) -> np.ndarray:
        """bool [n]: users in at least one scored region."""
        hit = np.zeros(codes.shape[0], bool)
        for p in range(self.n_partitions):
            hit |= np.isin(codes[:, p], self.region[self.partition == p])
        return hit


class HyperplaneLSH:
    """Several SimHash partitions of a fixed set of embeddings, with region populations and an inverted
    index (users sorted by region per partition) for candidate lookups."""

    def __init__(self, embeddings: np.ndarray, n_partitions: int = 16, n_bits: int = 10, seed: int = 0):
        self.planes = random_hyperplanes(embeddings.shape[1], n_partitions, n_bits, seed)
        self.codes = region_codes(embeddings, self.planes)
        self._build()

    @classmethod
    def from_planes(cls, embeddings: np.ndarray, planes: np.ndarray) -> HyperplaneLSH:
        self = cls.__new__(cls)
        self.planes = planes
        self.codes = region_codes(embeddings, planes)
        self._build()
        return self

    def _build(self) -> None:
        # Partition-major copies: one partition's users are contiguous, so a region is a slice.
        self.order = np.ascontiguousarray(np.argsort(self.codes, axis=0, kind="stable").T)  # [P, n_users]
        self.sorted_codes = np.take_along_axis(self.codes.T, self.order, axis=1)  # [P, n_users]
        self.populations = _count_by_region(self.codes)

    @property
    def n_partitions(self) -> int:
        return self.planes.shape[0]

    @property
    def n_bits(self) -> int:
        return self.planes.shape[1]

    def population(self, p: int, regions: np.ndarray) -> np.ndarray:
        """int64 [len(regions)]: users in each region of partition p."""
        present, counts = self.populations[p]
        pos = np.minimum(np.searchsorted(present, regions), max(present.size - 1, 0))
        return np.where(present[pos] == regions, counts[pos], 0)

    def users_in(self, p: int, regions: np.ndarray) -> np.ndarray:
        """user_idx of every user in the given regions of partition p (unsorted)."""
        regions = np.unique(regions)
        lo = np.searchsorted(self.sorted_codes[p], regions, side="left")
        hi = np.searchsorted(self.sorted_codes[p], regions, side="right")
        if regions.size == 1:
            return self.order[p, lo[0] : hi[0]]
        lengths = hi - lo
        offsets = np.cumsum(lengths) - lengths
        rows = np.arange(lengths.sum()) - np.repeat(offsets, lengths) + np.repeat(lo, lengths)
        return self.order[p, rows]

    def candidates(self, users: np.ndarray, min_partitions: int = 1) -> np.ndarray:
        """Sorted user_idx sharing a region with one of ``users`` in at least ``min_partitions`` partitions."""
        found = np.concatenate([np.unique(self.users_in(p, self.codes[users, p])) for p in range(self.n_partitions)])
        if min_partitions <= 1:
            return np.unique(found)
        ids, hits = np.unique(found, return_counts=True)
        return ids[hits >= min_partitions]

    def region_table(
        self, seeds: np.ndarray, kind: str = "density", min_region_seeds: int = 1, min_region_users: int = 1
    ) -> RegionTable:
        """The campaign's {(partition, region) -> score} table from its seed users' regions."""
        if kind not in ("density", "voting"):
            raise ValueError(f"kind must be 'density' or 'voting', got {kind!r}")
        parts, regions, scores = [], [], []
        for p in range(self.n_partitions):
            region, seed_count = np.unique(self.codes[seeds, p], return_counts=True)
            users = self.population(p, region)
            keep = (seed_count >= min_region_seeds) & (users >= min_region_users)
            region, seed_count, users = region[keep], seed_count[keep], users[keep]
            score = seed_count / users if kind == "density" else seed_count.astype(np.float64)
            parts.append(np.full(region.size, p, np.int16))
            regions.append(region)
            scores.append(score.astype(np.float32))
        return RegionTable(np.concatenate(parts), np.concatenate(regions), np.concatenate(scores), self.n_partitions)

    def score(self, table: RegionTable, users: np.ndarray | None = None) -> np.ndarray:
        """float32 [n]: the table looked up for ``users`` (everyone when None)."""
        return table.lookup(self.codes if users is None else self.codes[users], self.n_bits)

    def nearest(self, query: np.ndarray, embeddings: np.ndarray, k: int, query_codes: np.ndarray | None = None):
        """Approximate top-k by cosine: users sharing a region with the query in any partition, reranked
        exactly. query: float32 [d]. Returns (user_idx [<=k], candidates examined)."""
        codes = region_codes(query[None, :], self.planes)[0] if query_codes is None else query_codes
        slices = []
        for p in range(self.n_partitions):
            lo = np.searchsorted(self.sorted_codes[p], codes[p], side="left")
            hi = np.searchsorted(self.sorted_codes[p], codes[p], side="right")
            slices.append(self.order[p, lo:hi])
        cand = np.unique(np.concatenate(slices))
        sims = embeddings[cand] @ query
        k = min(k, cand.size)
        top = np.argpartition(-sims, k - 1)[:k] if k < cand.size else np.arange(cand.size)
        return cand[top[np.argsort(-sims[top])]], cand.size
