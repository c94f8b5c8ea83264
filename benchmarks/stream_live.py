"""Issue 21, at scale: a synthetic log arriving a day at a time in object storage, followed by
`advrec stream --follow` training on Ray Train workers.

`advrec synth --days D` writes the log (``--rows-per-day`` interactions a day, users and items
arriving day by day, tastes drifting); a real S3 endpoint on this machine (SeaweedFS,
`advrec.local_s3`) receives one day's partition as soon as the stream has published the day
before, and the stream lists the prefix every ``--poll`` seconds. For a stream whose tables keep
every id and one that expires those unseen for a week (``--expires``), reports per day: the seconds
from the listing that found the partition to its published model (``latency_s``; the partition
landed at most ``--poll`` s before), rows per second over that time, and the tables' sizes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream_live.py --days 30 \\
        --rows-per-day 1000000 --workers 2 --out /tmp/stream-live
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import s3fs

from advrec.config import load_config
from advrec.data.synth import synth_days
from advrec.local_s3 import local_s3
from advrec.stream import run_stream
from advrec.train.driver import connect, run_cpus

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET, BUCKET = "advrec-bench", "advrec-bench-secret", "advrec"


def follow(days: Path, prefix: str, out: Path, overrides: list[str], poll: float, idle: float,
           expire: int) -> list[dict]:
    """Follow ``prefix`` while uploading the day partitions of ``days`` to it, each once the
    stream has published the one before, until ``idle`` seconds pass after the last; the
    stream's history."""
    fs = s3fs.S3FileSystem()
    partitions = sorted(p for p in days.iterdir() if p.name.startswith("dt="))
    history = out / "stream_history.json"

    def published() -> int:
        return len(json.loads(history.read_text())) if history.exists() else 0

    cfg = load_config(None, [f"data.source={prefix}", "data.format=parquet", *overrides])
    fs.put(str(partitions[0]), f"{prefix.removeprefix('s3://')}/{partitions[0].name}",
           recursive=True)
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(run_stream, cfg, str(out), None, follow=True, poll=poll,
                             idle=idle, expire=expire, progress=False)
        for k, day in enumerate(partitions[1:], start=1):
            while published() < k and not stream.done():
                time.sleep(0.1)
            fs.put(str(day), f"{prefix.removeprefix('s3://')}/{day.name}", recursive=True)
        return stream.result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--drift", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--expires", default="0,7",
                        help="the streams' --expire-after, comma-separated (0: never)")
    parser.add_argument("--poll", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=60.0,
                        help="seconds without a new partition that end a stream (each day is "
                             "uploaded as soon as the one before is published)")
    parser.add_argument("--set", nargs="*", default=[], help="more config overrides")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/stream-live")
    args = parser.parse_args()
    # ε relative to each row's norm: the xavier rows of tables this size have norms near 0.02,
    # and an absolute ε of 0.5 (ml-100k's APR) drowns them; the model then learns nothing
    # (prequential NDCG@10 4e-5 to 1e-4 a day over 30 days, 0.017-0.021 relative over 8)
    overrides = ["model.name=mf", "model.dim=32", f"train.epochs={args.epochs}",
                 "train.batch_size=4096", "train.lr=0.01", "adv.method=fgm", "adv.eps=0.5",
                 "adv.relative=true",
                 f"scaling.num_workers={args.workers}", "eval.ks=[10]",
                 "eval.batch_users=4096", *args.set]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        days = Path(scratch) / "days"
        synth_days(args.users, args.items, args.days * args.rows_per_day, str(days),
                   days=args.days, drift=args.drift, seed=0)
        store = Path(scratch) / "s3"
        store.mkdir()
        with local_s3(store, KEY, SECRET, BUCKET) as endpoint:
            os.environ.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"})
            # Ray is started here, in the main thread: the processes of a local Ray started
            # by a stream's thread die with that thread (their parent-death signal)
            scaling = load_config(None, ["data.source=unused", *overrides]).scaling
            connect(None, run_cpus(scaling, streaming=False))
            for expire in [int(e) for e in args.expires.split(",")]:
                name = f"expire{expire}"
                history = follow(days, f"s3://{BUCKET}/{name}", args.out / name, overrides,
                                 args.poll, args.idle, expire)
                results[name] = history
                report(name, history)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


def report(name: str, history: list[dict]) -> None:
    """A stream's days: latency, rows per second, table sizes; and the medians."""
    print(f"\n{name}\n| day | rows | latency s | rows/s | users | items | expired users |")
    print("|---|---|---|---|---|---|---|")
    for r in history:
        if r.get("skipped"):
            continue
        print(f"| {r['window']} | {r['rows']} | {r['latency_s']:.1f} | "
              f"{r['rows'] / r['latency_s']:.0f} | {r['users']} | {r['items']} | "
              f"{r['expired_users']} |")
    later = [r for r in history[1:] if not r.get("skipped")]
    if later:
        print(f"median latency {statistics.median(r['latency_s'] for r in later):.1f} s, "
              f"median rows/s {statistics.median(r['rows'] / r['latency_s'] for r in later):.0f}")


if __name__ == "__main__":
    main()
