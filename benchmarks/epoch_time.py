"""Epoch time of adversarial training relative to clean BPR, measured side by side in one process.

Every method trains the same MF model on the same prepared ml-100k split with the training loop's
own `train_epoch`. Epochs are interleaved in rounds (BPR, FGM, PGD-1, PGD-3, ... back to back);
each method's epoch is divided by BPR's epoch of the same round, and the median over rounds is
reported, so the drifts and bursts of a shared machine cancel out.

    .venv/bin/python benchmarks/epoch_time.py [--epochs 30] [--steps 1,3,10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from advrec.adversarial import AdversarialObjective, Attack
from advrec.config import build_config
from advrec.data import load_dataset, prepare
from advrec.models import LOSSES, build_model
from advrec.train.allocator import tune_malloc
from advrec.train.loop import train_epoch
from advrec.train.optim import make_optimizer
from advrec.train.tasks import PairTask

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", default="1,3,10", help="PGD step counts K to time")
    parser.add_argument("--keep-malloc", action="store_true",
                        help="skip the training loop's malloc tuning, to measure what it buys")
    args = parser.parse_args()
    if not args.keep_malloc:
        tune_malloc()  # as the training loop does

    with tempfile.TemporaryDirectory() as tmp:
        prepare(str(args.data / "u.data"), "movielens", f"{tmp}/ml", seed=0)
        data = load_dataset(f"{tmp}/ml")
    cfg = build_config({"data": {"source": "unused"}})  # the shipped defaults: dim 64, batch 2048
    methods = {"bpr": Attack("none", 0.0), "fgm": Attack("fgm", 0.5)}
    methods |= {f"pgd{k}": Attack("pgd", 0.5, steps=k) for k in map(int, args.steps.split(","))}
    runs = {}
    for name, attack in methods.items():
        torch.manual_seed(0)
        model = build_model(cfg, data)
        runs[name] = (AdversarialObjective(model, LOSSES["bpr"], attack, lam=1.0),
                      make_optimizer(model, cfg.train),
                      torch.Generator().manual_seed(0))
    task = PairTask(data, cfg.train.num_negatives)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.epochs):
        for name, (objective, optimizer, generator) in runs.items():
            start = time.perf_counter()
            train_epoch(objective, optimizer, task, cfg.train.batch_size, adversarial=name != "bpr",
                        generator=generator)
            times[name].append(time.perf_counter() - start)

    # each round times every method back to back: the ratio within a round cancels the slow
    # drifts of a shared machine, and the median over rounds drops the bursts
    ratios = {name: statistics.median(t / b for t, b in zip(values, times["bpr"]))
              for name, values in times.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.epochs} interleaved rounds\n")
    print("| method | epoch s (median) | ratio to BPR (median over rounds) | target |")
    print("|---|---|---|---|")
    for name, values in times.items():
        k = int(name[3:]) if name.startswith("pgd") else None
        target = "1.0" if name == "bpr" else "≤ 1.6" if name == "fgm" else f"≤ {1 + 0.5 * k:.1f}"
        print(f"| {name} | {statistics.median(values):.4f} | {ratios[name]:.2f} | {target} |")


if __name__ == "__main__":
    main()
