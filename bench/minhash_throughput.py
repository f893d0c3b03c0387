"""MinHash signature + LSH throughput: lookalike's vectorised path vs plain datasketch, in one run.

    python bench/minhash_throughput.py --users 100000 1000000 --sample 20000

datasketch's per-set ``MinHash.update`` loop and ``MinHashLSH.insert`` are timed on a sample of users
(``--sample``) and reported per user, since a full 1M-user pass takes many minutes; the ratio compares
throughputs (users/s), which is what a nightly job pays for.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
from datasketch import MinHash, MinHashLSH

from lookalike_models.minhash import MinHashLSHIndex, item_hashes, signatures
from lookalike_models.synthetic import SyntheticConfig, generate


def user_item_csr(n_users: int, seed: int = 0):
    tables = generate(SyntheticConfig(n_users=n_users, n_items=max(5000, n_users // 20), n_campaigns=1, seed=seed))
    inter = tables["interactions"].sort("user_id", "item_id")
    users = inter["user_id"].to_numpy() - 1_000_000
    items = inter["item_id"].to_numpy().astype(np.int32) - 1
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
    return indptr, items, int(items.max()) + 1


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(n_users: int, sample: int, num_perm: int, threshold: float) -> dict:
    indptr, items, n_items = user_item_csr(n_users)
    item_ids = list(range(n_items))
    hashes, t_hash = timed(lambda: item_hashes(item_ids))
    sigs, t_sig = timed(lambda: signatures(indptr, items, hashes, num_perm))
    index, t_index = timed(lambda: MinHashLSHIndex(sigs, threshold))
    seeds = np.random.default_rng(0).choice(n_users, 1000, replace=False)
    found, t_query = timed(lambda: index.candidates(seeds))

    sample_users = np.random.default_rng(1).choice(n_users, min(sample, n_users), replace=False)
    encoded = [str(i).encode() for i in item_ids]

    def datasketch_signatures():
        out = []
        for u in sample_users:
            m = MinHash(num_perm=num_perm)
            for i in items[indptr[u] : indptr[u + 1]]:
                m.update(encoded[i])
            out.append(m)
        return out

    minhashes, t_ds_sig = timed(datasketch_signatures)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)

    def datasketch_insert():
        with lsh.insertion_session() as session:
            for u, m in zip(sample_users, minhashes):
                session.insert(int(u), m)

    _, t_ds_insert = timed(datasketch_insert)
    assert all((sigs[u] == m.hashvalues).all() for u, m in zip(sample_users[:200], minhashes[:200]))
    ours_rate = n_users / (t_sig + t_hash)
    ds_rate = len(sample_users) / t_ds_sig
    return {
        "users": n_users,
        "interactions": int(indptr[-1]),
        "num_perm": num_perm,
        "ours_signature_s": t_hash + t_sig,
        "ours_index_s": t_index,
        "ours_query_1k_seeds_s": t_query,
        "candidates": int(found.size),
        "ours_users_per_s": ours_rate,
        "datasketch_users_per_s": ds_rate,
        "datasketch_insert_users_per_s": len(sample_users) / t_ds_insert,
        "signature_speedup": ours_rate / ds_rate,
        "signature+index_speedup": (n_users / (t_hash + t_sig + t_index))
        / (1 / (1 / ds_rate + t_ds_insert / len(sample_users))),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print(
        "| users | interactions | ours signatures (s) | ours LSH index (s) | ours query 1k seeds (s) "
        "| ours users/s | datasketch users/s (update) | signature speed-up | signature+index speed-up "
        "| peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.users:
        r = run(n, args.sample, args.num_perm, args.threshold)
        print(
            f"| {r['users']:,} | {r['interactions']:,} | {r['ours_signature_s']:.2f} | {r['ours_index_s']:.2f} "
            f"| {r['ours_query_1k_seeds_s']:.3f} | {r['ours_users_per_s']:,.0f} | {r['datasketch_users_per_s']:,.0f} "
            f"| {r['signature_speedup']:.0f}x | {r['signature+index_speedup']:.0f}x | {r['peak_rss_gb']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
