"""Sharded embedding tables (issue 7): memory per worker and throughput, torchrec against dense,
and ml-100k APR-MF quality under both backends.

``--part memory``: a synthetic log (`advrec synth`: 1M users with 5 interactions each over 1M
items) prepared with its user ids hashed into a 5M-row table (``data.user_buckets``), so the
user table is 5M x 64 float32 = 1.28 GB and the item table 0.26 GB, the issue's sizes. One
epoch of APR-MF (FGM, ε = 0.1 relative) on 2 Ray Train workers with each backend:

- ``dense``: ``nn.Embedding`` tables replicated on both workers, sparse gradients and Adagrad
  (``train.sparse_embeddings``: the dense backend's large-table path; dense gradients would
  all-reduce 1.5 GB per step);
- ``torchrec``: both tables column-wise sharded, FBGEMM's fused exact Adagrad;
- ``torchrec-rowwise``: the same with row-wise Adagrad (one accumulator per row), the usual
  optimizer of large tables.

Reports each worker's peak resident memory (``metrics.json``'s ``peak_rss_bytes``), its table
bytes, and interactions/s (training rows / the epoch's training time, rank 0's clock).

``--part quality``: the shipped ``jobs/configs/ml100k-apr.yaml`` with Adagrad (the fused
optimizer both backends have on CPU) in this process, dense and torchrec, ``--seeds`` seeds:
test NDCG@10 of each, and their difference.

Results: ``benchmarks/out/sharded/results.json`` and Markdown tables on stdout.

    .venv/bin/python benchmarks/sharded.py [--part memory|quality|both] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from advrec.config import load_config
from advrec.data import prepare, synth
from advrec.data.dataset import is_prepared
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "data" / "ml-100k" / "u.data"
BACKENDS = {
    "dense": ["model.embeddings=dense", "train.sparse_embeddings=true"],
    "torchrec": ["model.embeddings=torchrec", "train.table_optimizer=adagrad",
                 "model.sharding={user: column_wise, item: column_wise}"],
    "torchrec-rowwise": ["model.embeddings=torchrec", "train.table_optimizer=rowwise_adagrad",
                         "model.sharding={user: column_wise, item: column_wise}"],
}
GIB = 1 << 30


def large_log(out: Path, users: int, items: int, rows: int) -> str:
    """The prepared synthetic log, its users hashed into ``rows`` rows (kept between runs)."""
    log, data = out / f"synth-{users}-{items}", out / f"synth-{users}-{items}-hashed-{rows}"
    if not is_prepared(str(data)):
        if not (log / "_synth.json").exists():
            start = time.perf_counter()
            synth(users, items, 5 * users, str(log))
            print(f"synth: {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        meta = prepare(str(log), "parquet", str(data), buckets={"user": rows})
        print(f"prepare: {time.perf_counter() - start:.0f} s, {meta['hashing']}")
    return str(data)


def memory_run(data: str, backend: str, out: Path, workers: int) -> dict[str, Any]:
    cfg = load_config(None, [
        f"data.source={data}", "model.name=mf", "model.dim=64", "adv.method=fgm",
        "adv.eps=0.1", "adv.relative=true", "train.optimizer=adagrad", "train.lr=0.05",
        "train.epochs=1", "train.batch_size=8192", "train.checkpoint_every=0",
        "eval.protocol=sampled", "eval.ks=[10]", f"scaling.num_workers={workers}",
        *BACKENDS[backend]])
    run = out / f"memory-{backend}"
    start = time.perf_counter()
    metrics = run_training(cfg, str(run), progress=False)
    wall = time.perf_counter() - start
    (epoch,) = json.loads((run / "history.json").read_text())
    rows = json.loads(Path(data, "meta.json").read_text())["counts"]["train"]
    return {"backend": backend, "peak_rss_bytes": metrics["peak_rss_bytes"],
            "table_bytes": metrics.get("table_bytes"), "train_s": epoch["train_s"],
            "rows": rows, "rows_per_s": rows / epoch["train_s"], "wall_s": wall,
            "test_ndcg@10": metrics["test"]["ndcg@10"]}


def quality_run(backend: str, seed: int, out: Path) -> float:
    cfg = load_config(ROOT / "jobs" / "configs" / "ml100k-apr.yaml", [
        f"data.source={ML100K}", f"data.cache_dir={out / 'cache'}", f"train.seed={seed}",
        "train.optimizer=adagrad", "train.lr=0.05", f"model.embeddings={backend}"])
    return run_training(cfg, str(out / f"quality-{backend}-{seed}"),
                        progress=False)["test"]["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["memory", "quality", "both"], default="both")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--user-rows", type=int, default=5_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "sharded")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}

    if args.part in ("memory", "both"):
        data = large_log(args.out, args.users, args.items, args.user_rows)
        runs = [memory_run(data, b, args.out, args.workers) for b in args.backends.split(",")]
        results["memory"] = runs
        results_file.write_text(json.dumps(results, indent=2))
        dense = max(next(r for r in runs if r["backend"] == "dense")["peak_rss_bytes"])
        print("| backend | peak RSS per worker (GiB) | vs dense | tables per worker (GiB) "
              "| interactions/s | vs dense |")
        print("|---|---|---|---|---|---|")
        base = next(r for r in runs if r["backend"] == "dense")["rows_per_s"]
        for r in runs:
            peaks = ", ".join(f"{p / GIB:.2f}" for p in r["peak_rss_bytes"])
            tables = ", ".join(f"{t / GIB:.2f}" for t in r["table_bytes"] or [])
            print(f"| {r['backend']} | {peaks} | {max(r['peak_rss_bytes']) / dense:.2f} | "
                  f"{tables or 'whole, replicated'} | {r['rows_per_s']:,.0f} | "
                  f"{r['rows_per_s'] / base:.2f} |")

    if args.part in ("quality", "both"):
        seeds = [int(s) for s in args.seeds.split(",")]
        ndcg = {b: [quality_run(b, s, args.out) for s in seeds] for b in ("dense", "torchrec")}
        results["quality"] = {"seeds": seeds, "test_ndcg@10": ndcg}
        results_file.write_text(json.dumps(results, indent=2))
        print("| backend | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
        print("|---|" + "---|" * (len(seeds) + 1))
        for backend, values in ndcg.items():
            print(f"| {backend} | " + " | ".join(f"{v:.4f}" for v in values)
                  + f" | {statistics.mean(values):.4f} |")
        gap = statistics.mean(ndcg["torchrec"]) - statistics.mean(ndcg["dense"])
        print(f"torchrec - dense mean test NDCG@10: {gap:+.4f}")


if __name__ == "__main__":
    main()
