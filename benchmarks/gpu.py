"""The GPU path (issue 4): samples/s of BPR, APR and PGD-K on one GPU against the CPU.

Trains MF with BPR, APR (FGM) and PGD-K adversarial training (adversarial from the first epoch)
on ml-100k (the shipped `jobs/configs/ml100k-apr.yaml`: dim 64, batch 2048, Adam, full ranking)
and on a synthetic log (`advrec synth`; dim 32, batch 8192, sampled evaluation, as
`throughput.py`), in three modes:

- ``cpu``: in this process on the CPU (PyTorch's default threads: every core);
- ``gpu``: in this process on the first CUDA device (``scaling.use_gpu=true``);
- ``gpu-ray``: on one Ray Train worker with one GPU, whose process group is NCCL (the path a
  GPU cluster runs; with one GPU lent, the group has one rank, so no all-reduce crosses GPUs).

Each run trains ``--epochs`` epochs and is timed on its last (the first pays CUDA's start and
the allocator's growth). Reports, per run: samples/s (training rows / that epoch's training
seconds), the ratio to the same method on the CPU and to BPR in the same mode (the adversarial
cost), set-up and overhead (Ray start-up, scheduling) seconds, and the device and process-group
backend each run's ``metrics.json`` records. Results are written after every run
(``OUT/results.json``, ``OUT/env.json``), so a stopped benchmark keeps what it measured.

    python benchmarks/gpu.py --data ../shared/data/ml-100k/u.data [--interactions 5000000]
        [--items 1000000] [--epochs 2] [--runs gpu:ml100k:bpr,...] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from throughput import timed_run

from advrec.config import load_config
from advrec.data import prepare, synth
from advrec.data.dataset import is_prepared

ROOT = Path(__file__).resolve().parents[1]
MODES = {"gpu": ["scaling.num_workers=0", "scaling.use_gpu=true"],
         "gpu-ray": ["scaling.num_workers=1", "scaling.use_gpu=true"],
         "cpu": ["scaling.num_workers=0", "scaling.use_gpu=false"]}
METHODS = {"bpr": ["adv.method=none"],
           "apr": ["adv.method=fgm", "adv.start_epoch=0"],
           "pgd3": ["adv.method=pgd", "adv.steps=3", "adv.start_epoch=0"]}
DATASETS = {"ml100k": [],  # the shipped config as it is
            "synth": ["model.dim=32", "train.batch_size=8192", "eval.protocol=sampled",
                      "eval.ks=[10]"]}


def prepared(dataset: str, args: argparse.Namespace) -> str:
    """``dataset``'s prepared directory under ``--out``, made at its first run (and kept)."""
    if dataset == "ml100k":
        path = str(args.out / "ml100k-prepared")
        if not is_prepared(path):
            prepare(str(args.data), "movielens", path, seed=0)
        return path
    path = str(args.out / f"synth-{args.interactions}-{args.items}-prepared")
    if not is_prepared(path):
        start = time.perf_counter()
        log = args.out / f"synth-{args.interactions}-{args.items}"
        synth(args.interactions // 50, args.items, args.interactions, str(log), seed=0)
        prepare(str(log), "parquet", path, seed=0)
        print(f"synth + prepare: {time.perf_counter() - start:.0f} s", flush=True)
    return path


def run_one(mode: str, dataset: str, method: str, data: str,
            args: argparse.Namespace) -> dict:
    cfg = load_config(ROOT / "jobs" / "configs" / "ml100k-apr.yaml",
                      [f"data.source={data}", f"train.epochs={args.epochs}", "train.patience=0",
                       *DATASETS[dataset], *METHODS[method], *MODES[mode], *args.set])
    run = args.out / f"{mode}-{dataset}-{method}"
    row = {"mode": mode, "dataset": dataset, "method": method, **timed_run(cfg, run)}
    row["devices"] = json.loads((run / "metrics.json").read_text())["devices"]
    return row


def environment() -> dict:
    """What ran the benchmark: the card, the software, the cores."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpus": os.cpu_count()}


def ratio(row: dict, rows: list[dict], **base: str) -> str:
    """``row``'s samples/s over those of the run that differs from it only in ``base``
    (``mode="cpu"``: the same method on the CPU; ``method="bpr"``: BPR in the same mode)."""
    keys = ("mode", "dataset", "method")
    want = {k: base.get(k, row[k]) for k in keys}
    other = next((r for r in rows if all(r[k] == want[k] for k in keys)), None)
    return f"{row['rows_per_s'] / other['rows_per_s']:.2f}" if other else "-"


def table(rows: list[dict]) -> str:
    """The Markdown results table: per dataset and method, every mode."""
    order = [(d, m, o) for d in DATASETS for m in METHODS for o in MODES]
    rows = sorted(rows, key=lambda r: order.index((r["dataset"], r["method"], r["mode"])))
    lines = [("| dataset | method | mode | samples/s | vs CPU | vs BPR | epoch s | first epoch s "
              "| setup s | overhead s | device, backend |"), "|---" * 11 + "|"]
    for r in rows:
        where = ", ".join(f"{d['device']} {d['backend']}" for d in r["devices"])
        lines.append(f"| {r['dataset']} | {r['method']} | {r['mode']} | {r['rows_per_s']:,.0f} "
                     f"| {ratio(r, rows, mode='cpu')} | {ratio(r, rows, method='bpr')} "
                     f"| {r['train_s']:.2f} | {r['first_train_s']:.2f} | {r['setup_s']:.1f} "
                     f"| {r['overhead_s']:.1f} | {where} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="ml-100k's u.data")
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", default=None, metavar="MODE:DATASET:METHOD,...",
                        help="only these runs, in this order (default: every dataset, mode and "
                             "method, ml-100k first, GPU first)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "gpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "env.json").write_text(json.dumps(environment(), indent=1))
    print(json.dumps(environment()), flush=True)

    runs = ([tuple(r.split(":")) for r in args.runs.split(",")] if args.runs
            else [(o, d, m) for d in DATASETS for o in MODES for m in METHODS])
    results = args.out / "results.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    for mode, dataset, method in runs:
        row = run_one(mode, dataset, method, prepared(dataset, args), args)
        rows = [r for r in rows if (r["mode"], r["dataset"], r["method"])
                != (mode, dataset, method)] + [row]
        print(json.dumps(row), flush=True)
        results.write_text(json.dumps(rows, indent=1))
    print(f"\n{environment()}; ml-100k and {args.interactions:,} synthetic interactions over "
          f"{args.items:,} items; {args.epochs} epochs, timed on the last\n")
    print(table(rows))


if __name__ == "__main__":
    main()
