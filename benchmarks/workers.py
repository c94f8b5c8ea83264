"""Ray Train workers on ml-100k (issue 4): 2 workers against training in-process, same quality?

Trains the shipped BPR and APR configs (`jobs/configs/ml100k-{bpr,apr}.yaml`) for each seed in
this process (``scaling.num_workers=0``) and on 2 Ray Train workers (DDP over gloo, each worker
on its own shard with ``train.batch_size / 2`` rows per step), overriding only ``data.source``,
``data.format``, ``train.seed`` and ``scaling.num_workers``. Reports test NDCG@10 of both, their
difference (target: within 0.01), epochs and wall time. With ``--stream`` the workers stream
their training rows with Ray Data (``data.stream=true``) against the same in-process baseline.
Results: ``benchmarks/out/workers/results[-stream].json`` and a Markdown table on stdout.

    .venv/bin/python benchmarks/workers.py [--seeds 0] [--workers 2] [--stream]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from advrec.config import load_config
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("bpr", "apr")


def run_one(method: str, seed: int, workers: int, stream: bool, data: Path, out: Path) -> dict:
    cfg = load_config(ROOT / "jobs" / "configs" / f"ml100k-{method}.yaml",
                      [f"data.source={data / 'u.data'}", "data.format=movielens",
                       f"train.seed={seed}", f"scaling.num_workers={workers}",
                       f"data.stream={str(stream).lower()}"])
    run = out / f"{method}-w{workers}{'-stream' if stream else ''}-seed{seed}"
    start = time.perf_counter()
    metrics = run_training(cfg, str(run), progress=False)
    wall = time.perf_counter() - start
    history = json.loads((run / "history.json").read_text())
    return {"method": method, "seed": seed, "workers": workers, "wall_s": wall,
            "ndcg@10": metrics["test"]["ndcg@10"], "epochs": len(history),
            "best_epoch": metrics["best_epoch"],
            "epoch_s": statistics.median(h["train_s"] for h in history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--stream", action="store_true",
                        help="the workers stream their rows (data.stream)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "workers")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [run_one(m, s, w, args.stream and w > 0, args.data, args.out)
            for m in METHODS for s in seeds for w in (0, args.workers)]
    args.out.mkdir(parents=True, exist_ok=True)
    name = "results-stream.json" if args.stream else "results.json"
    (args.out / name).write_text(json.dumps(rows, indent=1))

    print(f"seeds {seeds}; test NDCG@10 in-process vs {args.workers} Ray Train workers"
          f"{' streaming their rows' if args.stream else ''}\n")
    print(f"| method | in-process | {args.workers} workers | difference | within 0.01 "
          f"| epochs (in-process / workers) | wall s (in-process / workers) |")
    print("|---|---|---|---|---|---|---|")
    for m in METHODS:
        def mean(key: str, workers: int, method: str = m) -> float:
            return statistics.fmean(r[key] for r in rows
                                    if r["method"] == method and r["workers"] == workers)
        one, many = mean("ndcg@10", 0), mean("ndcg@10", args.workers)
        print(f"| {m} | {one:.4f} | {many:.4f} | {many - one:+.4f} "
              f"| {'✔' if abs(many - one) <= 0.01 else '✘'} "
              f"| {mean('epochs', 0):.0f} / {mean('epochs', args.workers):.0f} "
              f"| {mean('wall_s', 0):.0f} / {mean('wall_s', args.workers):.0f} |")


if __name__ == "__main__":
    main()
