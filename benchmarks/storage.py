"""Object storage (issue 4): read throughput of a Parquet log from S3 against local disk.

Writes a synthetic log (`advrec synth`, Parquet part files) to a local directory, uploads it to a
real S3 endpoint on this machine (SeaweedFS, `advrec.local_s3`), then reads it back through
advrec's one reader (`read_log(url, "parquet")`, what `advrec prepare` runs) from both, several
times each, alternating. Reports rows/s (median) and the ratio S3 / local (target >= 0.5).
Results: ``benchmarks/out/storage/results.json`` and a Markdown table on stdout.

    .venv/bin/python benchmarks/storage.py [--rows 2000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import s3fs

from advrec.data import synth
from advrec.data.readers import read_log
from advrec.local_s3 import local_s3

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET, BUCKET = "bench-key", "bench-secret", "bench"


def timed_read(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    rows = read_log(url, "parquet").num_rows
    return time.perf_counter() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "storage")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "log"
        synth(args.rows // 40, 100_000, args.rows, str(local), seed=0,
              rows_per_file=args.rows_per_file)
        size = sum(f.stat().st_size for f in local.glob("*.parquet"))
        store = Path(scratch) / "s3"
        store.mkdir()
        with local_s3(store, KEY, SECRET, BUCKET) as endpoint:
            os.environ.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"})
            s3fs.S3FileSystem().put(str(local), f"{BUCKET}/log", recursive=True)
            times: dict[str, list[float]] = {"local": [], "s3": []}
            for _ in range(args.repeats):
                for name, url in (("local", str(local)), ("s3", f"s3://{BUCKET}/log")):
                    seconds, rows = timed_read(url)
                    assert rows == args.rows, (name, rows)
                    times[name].append(seconds)

    rate = {name: args.rows / statistics.median(t) for name, t in times.items()}
    result = {"rows": args.rows, "files": -(-args.rows // args.rows_per_file), "bytes": size,
              "repeats": args.repeats, "seconds": times, "rows_per_s": rate,
              "ratio": rate["s3"] / rate["local"]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    print(f"{args.rows} rows in {result['files']} Parquet files ({size / 2**20:.1f} MiB); "
          f"median of {args.repeats} reads\n")
    print("| source | rows/s | MiB/s | vs local |")
    print("|---|---|---|---|")
    for name in ("local", "s3"):
        seconds = statistics.median(times[name])
        print(f"| {name} | {rate[name]:,.0f} | {size / 2**20 / seconds:.0f} "
              f"| {rate[name] / rate['local']:.2f} |")
    print(f"\nS3 / local = {result['ratio']:.2f} (target >= 0.5: "
          f"{'✔' if result['ratio'] >= 0.5 else '✘'})")


if __name__ == "__main__":
    main()
