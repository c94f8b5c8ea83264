"""Training throughput on a large synthetic log (issue 4): in-process, 1 and 2 Ray Train workers.

Writes a synthetic log (default 5M interactions over 1M items, `advrec synth`), prepares it
once, then trains MF for one epoch with BPR and with PGD-K adversarial training, with dense and
with sparse embedding gradients (``train.sparse_embeddings``, methods ``*-sparse``), with the
training rows in memory or streamed by Ray Data (``data.stream``, methods ``*-stream``), in this
process (``scaling.num_workers=0``) and on 1 and N Ray Train workers (DDP over gloo). Validation uses the
sampled protocol (100 negatives) so it does not dominate. Reports, per run:

- interactions/s: training rows / the epoch's training time (rank 0's clock);
- setup s: from the worker loop's start to the first epoch's start (data load, model, DDP);
  a stream's time to its first batch counts in the epoch;
- overhead s: the rest of the wall time outside training and validation: Ray start-up,
  worker scheduling, the driver (the in-process run has no Ray to start);
- the PGD-K / BPR ratio of the epoch time at each worker count (adversarial cost per step).

Every run is a fresh ``run_training`` call, so each Ray run pays its own start-up. Results:
``benchmarks/out/throughput/results.json`` and a Markdown table on stdout.

    OMP_NUM_THREADS=... .venv/bin/python benchmarks/throughput.py [--interactions 5000000]
        [--items 1000000] [--workers 2] [--steps 3] [--runs bpr:0,bpr-sparse-stream:2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from advrec.config import RunConfig, load_config
from advrec.data import prepare, synth
from advrec.data.dataset import is_prepared
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]


def timed_run(cfg: RunConfig, run: Path) -> dict:
    """Train ``cfg`` (on a prepared dataset) into ``run`` and time it, from its last epoch (an
    earlier one pays one-off costs, such as CUDA's start): training rows per second of training
    time (rank 0's clock), the first epoch's set-up, and the wall time outside all three."""
    start = time.perf_counter()
    run_training(cfg, str(run), progress=False)
    wall = time.perf_counter() - start
    history = json.loads((run / "history.json").read_text())
    rows = json.loads(Path(cfg.data.source, "meta.json").read_text())["counts"]["train"]
    inside = sum(e["train_s"] + e.get("eval_s", 0.0) for e in history) + history[0]["setup_s"]
    return {"wall_s": wall, "epochs": len(history), "train_s": history[-1]["train_s"],
            "first_train_s": history[0]["train_s"], "eval_s": history[-1].get("eval_s", 0.0),
            "setup_s": history[0]["setup_s"], "overhead_s": wall - inside, "rows": rows,
            "rows_per_s": rows / history[-1]["train_s"]}


def run_one(data: str, method: str, workers: int, args: argparse.Namespace) -> dict:
    adversary = (["adv.method=pgd", f"adv.steps={args.steps}", "adv.eps=0.1", "adv.relative=true"]
                 if method.startswith("pgd") else [])
    if "-sparse" in method:
        adversary.append("train.sparse_embeddings=true")
    if method.endswith("-stream"):
        adversary.append("data.stream=true")
    cfg = load_config(None, [f"data.source={data}", "model.name=mf", f"model.dim={args.dim}",
                             "train.epochs=1", f"train.batch_size={args.batch_size}",
                             "train.lr=0.001", "train.checkpoint_every=0",
                             "eval.protocol=sampled", "eval.ks=[10]",
                             f"scaling.num_workers={workers}", *adversary])
    return {"method": method, "workers": workers,
            **timed_run(cfg, args.out / f"{method}-w{workers}")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default interactions / 50")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="PGD steps K")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--runs", default=None, metavar="METHOD:WORKERS,...",
                        help="only these runs, e.g. bpr:0,bpr-sparse-stream:2 (default: all 24)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "throughput")
    args = parser.parse_args()
    users = args.users or args.interactions // 50

    name = f"synth-{args.interactions}-{args.items}"
    log, data = args.out / name, str(args.out / f"{name}-prepared")
    if not is_prepared(data):  # kept between invocations: generating 5M rows takes minutes
        start = time.perf_counter()
        synth(users, args.items, args.interactions, str(log), seed=0)
        print(f"synth: {time.perf_counter() - start:.0f} s", flush=True)
        start = time.perf_counter()
        prepare(str(log), "parquet", data, seed=0)
        print(f"prepare: {time.perf_counter() - start:.0f} s", flush=True)

    # earlier results of the same setting are kept, so --runs can redo one that was disturbed
    results = args.out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    methods = tuple(f"{m}{sparse}{stream}" for stream in ("", "-stream")
                    for sparse in ("", "-sparse") for m in ("bpr", f"pgd{args.steps}"))
    counts = (0, 1, args.workers)
    for method, workers in ([tuple(r.split(":")) for r in args.runs.split(",")] if args.runs
                            else [(m, w) for m in methods for w in counts]):
        row = run_one(data, method, int(workers), args)
        rows = [r for r in rows if (r["method"], r["workers"]) != (method, int(workers))] + [row]
        print(json.dumps(row), flush=True)
        results.write_text(json.dumps(rows, indent=1))
    rows.sort(key=lambda r: (methods.index(r["method"]), r["workers"]))

    print(f"\n{args.interactions:,} interactions, {users:,} users, {args.items:,} items; MF dim "
          f"{args.dim}, global batch {args.batch_size}, 1 epoch\n")
    print("| method | workers | interactions/s | vs 1 worker | epoch s | setup s "
          "| overhead s | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        one = next((o for o in rows if o["method"] == r["method"] and o["workers"] == 1), r)
        print(f"| {r['method']} | {r['workers'] or 'in-process'} | {r['rows_per_s']:,.0f} "
              f"| {r['rows_per_s'] / one['rows_per_s']:.2f} | {r['train_s']:.1f} "
              f"| {r['setup_s']:.1f} | {r['overhead_s']:.1f} | {r['wall_s']:.0f} |")
    print(f"\nPGD-{args.steps} / BPR epoch time:")
    for sparse in ("", "-sparse", "-stream", "-sparse-stream"):
        for workers in counts:
            pair = [next((r for r in rows if r["method"] == m + sparse and r["workers"] == workers),
                         None) for m in ("bpr", f"pgd{args.steps}")]
            if None not in pair:
                print(f"- {sparse[1:] or 'dense'}, {workers or 'in-process'}: "
                      f"{pair[1]['train_s'] / pair[0]['train_s']:.2f}")


if __name__ == "__main__":
    main()
