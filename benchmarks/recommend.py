"""Top-10 for every user (issue 22): `advrec recommend` against a plain full-matrix torch.topk.

Writes a synthetic log (default 5M interactions, 100k users, 1M items), prepares it, trains MF
(dim 32, one epoch, sparse embedding gradients) once, then ranks every user's top 10 (the user's
items left out) in a fresh child process per variant, each loading the run itself:

- ``baseline``: chunks of ``--batch-users`` users, each scored against the whole catalogue in
  one (B, N) matrix, the seen items set to -inf (as evaluation masks them), ``torch.topk``;
  nothing written;
- ``recommend``: `advrec recommend` in the process (the catalogue in blocks of 65,536 items,
  each merged into the running top 10; the Parquet file written);
- ``recommend-w2``: the same on 2 Ray Train workers (its Ray start-up included; the workers'
  memory is theirs, so only the time is compared).

Reports users/s (users / the child's seconds from its start to its end, loading included) and
the child's peak resident memory, each against the baseline's. Results:
``benchmarks/out/recommend/results.json`` and a Markdown table on stdout.

    OMP_NUM_THREADS=... .venv/bin/python benchmarks/recommend.py [--interactions 5000000]
        [--users 100000] [--items 1000000] [--variants baseline,recommend,recommend-w2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "recommend", "recommend-w2")


def baseline(run: str, k: int, batch_users: int) -> int:
    """The plain way: every chunk of users against the whole catalogue at once."""
    from advrec.data import load_dataset
    from advrec.metrics.evaluate import csr_rows
    from advrec.train import load_model, read_run
    from advrec.train.checkpoint import model_url

    cfg, dataset = read_run(run)
    data = load_dataset(dataset)
    model, _ = load_model(model_url(run), cfg, data)
    seen = [data.positives(s) for s in ("known", "train", "valid", "test")]
    with torch.no_grad():
        for users in torch.arange(data.num_users).split(batch_users):
            scores = model.rank_scores({"user": users})  # (B, N)
            for ptr, idx in seen:
                scores[csr_rows(ptr, idx, users)] = -torch.inf
            torch.topk(scores, k, dim=1)
    return data.num_users


def child(args: argparse.Namespace) -> None:
    """One variant, timed from the process's start; prints a JSON line."""
    start = time.perf_counter()
    if args.variant == "baseline":
        users = baseline(args.run, args.k, args.batch_users)
    else:
        from advrec.serve.recommend import recommend_run

        workers = 2 if args.variant == "recommend-w2" else 0
        users = recommend_run(args.run, str(Path(args.out, f"{args.variant}.parquet")), k=args.k,
                              batch_users=args.batch_users, workers=workers,
                              progress=False)["users"]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": args.variant, "users": users, "seconds": seconds,
                      "users_per_s": users / seconds, "peak_rss_bytes": peak}))


def prepare_run(args: argparse.Namespace) -> str:
    """The trained MF run (made once, kept under ``--out``)."""
    from advrec.config import load_config
    from advrec.data import prepare, synth
    from advrec.data.dataset import is_prepared
    from advrec.train import run_training

    name = f"synth-{args.interactions}-{args.users}-{args.items}"
    log, data, run = (args.out / name, args.out / f"{name}-prepared", args.out / f"{name}-mf")
    if not is_prepared(str(data)):
        synth(args.users, args.items, args.interactions, str(log), seed=0)
        prepare(str(log), "parquet", str(data), seed=0)
    if not (run / "metrics.json").exists():
        cfg = load_config(None, [f"data.source={data}", "model.name=mf", "model.dim=32",
                                 "train.epochs=1", "train.batch_size=8192",
                                 "train.sparse_embeddings=true", "train.checkpoint_every=0",
                                 "eval.protocol=sampled", "eval.ks=[10]"])
        run_training(cfg, str(run), progress=False)
    return str(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch-users", type=int, default=1024)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "recommend")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # a child's
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    run = prepare_run(args)
    # earlier variants of the same setting are kept, so --variants can redo one alone
    results = args.out / "results.json"
    rows = [r for r in (json.loads(results.read_text()) if results.exists() else [])
            if r["variant"] not in args.variants.split(",")]
    for variant in args.variants.split(","):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--run", run,
                              "--k", str(args.k), "--batch-users", str(args.batch_users),
                              "--out", str(args.out)],
                             check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        results.write_text(json.dumps(rows, indent=1))
    rows.sort(key=lambda r: VARIANTS.index(r["variant"]))
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    print(f"\ntop-{args.k} of {args.users:,} users over {args.items:,} items "
          f"({args.interactions:,} interactions), MF dim 32, {args.batch_users} users a chunk\n")
    print("| variant | users/s | vs baseline | seconds | peak RSS (GiB) | vs baseline |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        speed = f"{r['users_per_s'] / base['users_per_s']:.2f}" if base else "-"
        memory = (f"{r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}"
                  if base and r["variant"] != "recommend-w2" else "-")
        print(f"| {r['variant']} | {r['users_per_s']:,.0f} | {speed} | {r['seconds']:.1f} "
              f"| {r['peak_rss_bytes'] / 2**30:.2f} | {memory} |")


if __name__ == "__main__":
    main()
