"""Submission overhead (issue 6): how long from `advrec submit` to the job's first training line?

Starts a Ray head on this machine (`advrec.local_head`: its job server on 127.0.0.1, token
authentication on), submits one job to warm it, then alternates, ``--repeats`` times each:

- ``submit``: ``advrec submit jobs/ml100k-apr.yaml --wait``, the job on the head;
- ``run`` (the baseline): ``advrec run jobs/ml100k-apr.yaml``, the same command in this machine's
  own process, no job server (what the job's entrypoint does).

Each is timed from the command's start to its first ``epoch 1/`` log line (data prepared and
cached beforehand, so both only load it), and to its end. Both train APR-MF on ml-100k for one
epoch in-process (``scaling.num_workers=0``), their runs written under ``--out``.
Results: ``benchmarks/out/submit/results.json`` and a Markdown table on stdout.

    .venv/bin/python benchmarks/submit.py [--repeats 3] [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from advrec.local_head import local_head

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "jobs" / "ml100k-apr.yaml"


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Seconds from starting ``command`` to its first epoch line, and to its end."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    first = None
    lines = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if first is None and line.startswith("epoch 1/"):
            first = time.perf_counter() - start
    if proc.wait() != 0 or first is None:
        sys.exit("".join(lines[-20:]) + f"\n{command[2]} failed")
    return {"first_line_s": first, "total_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "submit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = [f"data.source={args.data / 'u.data'}", "data.format=movielens",
                 "train.epochs=1", "adv.start_epoch=0", "scaling.num_workers=0",
                 "eval.eps=[0.0]"]
    advrec = [sys.executable, "-m", "advrec.cli"]
    with tempfile.TemporaryDirectory(prefix="rh-", dir="/tmp") as tmp, \
            local_head(Path(tmp), num_cpus=2, env={"OMP_NUM_THREADS": "1"}) as head:
        env = {**head.client_env(), "OMP_NUM_THREADS": "1"}
        # the spec's storage, here: a directory both the head's jobs and this process reach
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(SPEC.read_text().replace("config: configs/", f"config: {SPEC.parent}/configs/")
                        .replace("storage: runs/jobs", f"storage: {args.out / 'runs'}"))
        submit = [*advrec, "submit", str(spec), "--address", head.url, "--wait", *overrides]
        run = [*advrec, "run", str(spec), *overrides]
        timed(run, env)  # prepares and caches the dataset
        timed(submit, env)  # warms the head: its first job starts its workers
        rows = []
        for _ in range(args.repeats):
            rows.append({"how": "run", **timed(run, env)})
            rows.append({"how": "submit", **timed(submit, env)})
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    med = {how: {k: statistics.median(r[k] for r in rows if r["how"] == how)
                 for k in ("first_line_s", "total_s")} for how in ("run", "submit")}
    print("| command | to first epoch line (s, median) | to the end (s, median) |")
    print("|---|---|---|")
    for how in ("run", "submit"):
        print(f"| advrec {how} | {med[how]['first_line_s']:.2f} | {med[how]['total_s']:.2f} |")
    extra = med["submit"]["first_line_s"] - med["run"]["first_line_s"]
    ratio = med["submit"]["first_line_s"] / med["run"]["first_line_s"]
    print(f"submission overhead to the first line: {extra:+.2f} s ({ratio:.2f}x the local run)")


if __name__ == "__main__":
    main()
