"""Hyperplane LSH vs exact search on StarSpace embeddings, and the encoder's training throughput.

    python bench/pinterest_lsh.py --users 200000 --out bench/results/pinterest_lsh.md

Steps, on one torch thread: generate the synthetic population (``--users``), train the StarSpace encoder
on it (``--epochs``, users/s measured over the training epochs only), then for ``--queries`` random users
compare the LSH top-100 (users sharing a region in any partition, reranked exactly) with the exact
top-100 by cosine (torch matmul + topk): recall@100, share of users scanned, time per query. Campaign
scoring (one 1,000-seed list) is timed both ways too: density table + lookup vs exact centroid cosine.
faiss is compared only when importable.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.common import load_data  # noqa: E402
from lookalike_models.pinterest.encoder import EncoderConfig, train_encoder  # noqa: E402
from lookalike_models.pinterest.lsh import HyperplaneLSH, default_bits  # noqa: E402
from lookalike_models.synthetic import SyntheticConfig  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def exact_top(emb: torch.Tensor, queries: np.ndarray, k: int, batch: int = 64) -> tuple[np.ndarray, float]:
    out, start = [], time.perf_counter()
    for lo in range(0, queries.size, batch):
        sims = emb[torch.as_tensor(queries[lo : lo + batch])] @ emb.T
        out.append(torch.topk(sims, k, dim=1).indices.numpy())
    return np.concatenate(out), time.perf_counter() - start


def faiss_rows(emb: np.ndarray, queries: np.ndarray, exact: np.ndarray, k: int, per_exact_single: float) -> list[str]:
    """The peers a user would pick: faiss IndexLSH (binary codes, Hamming) and HNSW (inner product), same
    queries, one thread, one query at a time."""
    try:
        import faiss
    except ImportError:
        return ["- faiss (IndexLSH, HNSW): not installed (`pip install -e '.[bench]'`), not compared"]
    faiss.omp_set_num_threads(1)
    d = emb.shape[1]
    rows = [
        "",
        "### faiss on the same embeddings and queries (1 thread, one query at a time)",
        "",
        "| index | build s | recall@100 | ms/query | speed-up vs exact single |",
        "|---|---|---|---|---|",
    ]
    for label, make in [
        (f"IndexLSH {4 * d} bits", lambda: faiss.IndexLSH(d, 4 * d, True)),
        (f"IndexLSH {8 * d} bits", lambda: faiss.IndexLSH(d, 8 * d, True)),
        ("HNSWFlat M=32 efSearch=128", lambda: hnsw(faiss, d)),
    ]:
        start = time.perf_counter()
        index = make()
        index.add(emb)
        t_build = time.perf_counter() - start
        start = time.perf_counter()
        found = np.concatenate([index.search(emb[q : q + 1], k)[1] for q in queries])
        per_query = (time.perf_counter() - start) / queries.size
        recall = np.mean([np.isin(t, f).mean() for t, f in zip(exact, found)])
        rows.append(
            f"| {label} | {t_build:.1f} | {recall:.3f} | {1e3 * per_query:.2f} | {per_exact_single / per_query:.1f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def hnsw(faiss, d: int):
    index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 128
    return index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["16:16", "32:16", "32:64"],
        help="partitions:users_per_region pairs to measure",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        "# Pinterest act-alike: LSH vs exact search, encoder throughput",
        "",
        f"Command: `python bench/pinterest_lsh.py --users {args.users} --epochs {args.epochs}`; machine: "
        f"2-core CPU, shared ({platform.processor() or platform.machine()}); one torch thread.",
        "",
    ]

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SyntheticConfig(n_users=args.users, n_items=max(5000, args.users // 40), n_campaigns=2)
        data, t_data = timed(lambda: load_data("synthetic", Path(tmp), cfg))
    enc_cfg = EncoderConfig(max_epochs=args.epochs, patience=args.epochs, history_len=50)
    fitted, t_train = timed(lambda: train_encoder(data, enc_cfg))
    emb = fitted.embeddings
    epochs = [h for h in fitted.history if h["epoch"] > 0]
    lines += [
        f"## Data: {data.n_users:,} synthetic users, {data.user_idx.size:,} interactions, {data.n_items:,} items "
        f"(generated + encoded in {t_data:.0f} s)",
        "",
        "### StarSpace encoder training",
        "",
        f"- {len(epochs)} epochs, {enc_cfg.positives_per_user} positives x {enc_cfg.negatives} negatives "
        f"per user per epoch, dim {enc_cfg.dim}, batch {enc_cfg.batch_users} users",
        f"- throughput: **{fitted.users_per_second:,.0f} users/s** (training steps only, 1 thread); "
        f"{fitted.users_per_second * enc_cfg.positives_per_user:,.0f} (user, topic) positives/s",
        f"- whole fit incl. transfer-task evaluation each epoch and embedding every user: {t_train:.0f} s",
        "- transfer error by epoch: " + ", ".join(f"{h['epoch']}: {h['transfer_error']:.3f}" for h in fitted.history),
        "",
    ]
    print("\n".join(lines), flush=True)

    rng = np.random.default_rng(0)
    queries = rng.choice(data.n_users, args.queries, replace=False)
    emb_t = torch.as_tensor(emb)
    exact, t_exact_batched = exact_top(emb_t, queries, args.k)
    _, t_exact_single = exact_top(emb_t, queries[:50], args.k, batch=1)
    per_exact_single = t_exact_single / 50
    lines += [
        "### Top-100 nearest users: LSH (any shared region, exact rerank) vs exact",
        "",
        f"Exact torch search: {1e3 * t_exact_batched / queries.size:.2f} ms/query batched by 64, "
        f"{1e3 * per_exact_single:.2f} ms/query one at a time.",
        "",
        "| partitions | bits | users/region | build s | recall@100 | users scanned | ms/query "
        "| speed-up vs exact single |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in args.settings:
        parts, per_region = int(setting.split(":")[0]), float(setting.split(":")[1])
        bits = default_bits(data.n_users, per_region)
        start = time.perf_counter()
        lsh = HyperplaneLSH(emb, parts, bits, seed=1)
        t_build = time.perf_counter() - start
        recalls, scanned = [], []
        start = time.perf_counter()
        for q, truth in zip(queries, exact):
            found, n_cand = lsh.nearest(emb[q], emb, args.k, query_codes=lsh.codes[q])
            recalls.append(np.isin(truth, found).mean())
            scanned.append(n_cand / data.n_users)
        per_query = (time.perf_counter() - start) / queries.size
        lines.append(
            f"| {parts} | {bits} | {data.n_users / 2**bits:.0f} | {t_build:.1f} | {np.mean(recalls):.3f} "
            f"| {np.mean(scanned):.2%} | {1e3 * per_query:.2f} | {per_exact_single / per_query:.1f}x |"
        )
        print(lines[-1], flush=True)

    lsh = HyperplaneLSH(emb, 16, default_bits(data.n_users, 16), seed=1)
    seeds = rng.choice(data.n_users, 1000, replace=False)
    table, t_table = timed(lambda: lsh.region_table(seeds, "density", 1, 3))
    _, t_lookup = timed(lambda: lsh.score(table))
    centroid = torch.nn.functional.normalize(emb_t[torch.as_tensor(seeds)].mean(0), dim=0)
    _, t_cos = timed(lambda: torch.topk(emb_t @ centroid, max(1, data.n_users // 20)))
    lines += [
        "",
        "### Scoring one campaign (1,000 seeds) over every user",
        "",
        f"- density table: {table.region.size} regions over 16 partitions "
        f"({table.region.nbytes + table.score.nbytes + table.partition.nbytes:,} bytes), built in "
        f"{1e3 * t_table:.1f} ms; lookup for all users {1e3 * t_lookup:.0f} ms",
        f"- exact centroid cosine + top 5%: {1e3 * t_cos:.0f} ms",
        "",
    ]
    lines += faiss_rows(emb, queries, exact, args.k, per_exact_single)
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
