"""Epoch time of adversarial training relative to clean BPR, measured side by side in one process.

Every method trains the same MF model on the same prepared ml-100k split with the training loop's
own `train_epoch`. Epochs are interleaved round-robin (BPR, FGM, PGD-1, PGD-3, ...), so machine
noise hits every method alike. Each method's fastest epoch (the least disturbed by other load,
as timeit reports) and median epoch are divided by BPR's.

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
from advrec.data.negatives import NegativeSampler
from advrec.models import LOSSES, build_model
from advrec.train.loop import make_optimizer, train_epoch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", default="1,3,10", help="PGD step counts K to time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prepare(str(args.data / "u.data"), "movielens", f"{tmp}/ml", seed=0)
        data = load_dataset(f"{tmp}/ml")
    cfg = build_config({"data": {"source": "unused"}})  # the shipped defaults: dim 64, batch 2048
    methods = {"bpr": Attack("none", 0.0), "fgm": Attack("fgm", 0.5)}
    methods |= {f"pgd{k}": Attack("pgd", 0.5, steps=k) for k in map(int, args.steps.split(","))}
    runs = {}
    for name, attack in methods.items():
        torch.manual_seed(0)
        model = build_model(cfg.model, data.num_users, data.num_items)
        runs[name] = (AdversarialObjective(model, LOSSES["bpr"], attack, lam=1.0),
                      make_optimizer(model.parameters(), cfg.train),
                      torch.Generator().manual_seed(0))
    sampler = NegativeSampler(data.train.user, data.train.item, data.num_items)
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.epochs):
        for name, (objective, optimizer, generator) in runs.items():
            start = time.perf_counter()
            train_epoch(objective, optimizer, data, sampler, cfg.train,
                        adversarial=name != "bpr", generator=generator)
            times[name].append(time.perf_counter() - start)

    # the fastest epoch is the least disturbed by other load on the machine (as timeit does)
    base = min(times["bpr"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.epochs} interleaved epochs each\n")
    print("| method | epoch s (min) | epoch s (median) | ratio to BPR (min) | ratio (median) | target |")
    print("|---|---|---|---|---|---|")
    median_base = statistics.median(times["bpr"])
    for name, values in times.items():
        k = int(name[3:]) if name.startswith("pgd") else None
        target = "1.0" if name == "bpr" else "≤ 1.6" if name == "fgm" else f"≤ {1 + 0.5 * k:.1f}"
        print(f"| {name} | {min(values):.4f} | {statistics.median(values):.4f} | "
              f"{min(values) / base:.2f} | {statistics.median(values) / median_base:.2f} | {target} |")


if __name__ == "__main__":
    main()
