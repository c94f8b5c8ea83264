"""Epoch time of adversarial training relative to clean BPR, measured side by side in one process.

Every method trains the same MF model on the same prepared ml-100k split with the training loop's
own `train_epoch`. Epochs are interleaved in rounds (BPR, FGM, PGD-1, PGD-3, ... back to back,
every other round in reverse order, so no method always runs first or last); each method's epoch
is divided by BPR's epoch of the same round, and the median over rounds is reported, so the
drifts and bursts of a shared machine cancel out. With ``--adaptive`` the rounds time VAT's and
PamaCF's per-user ε (FGM with ``adv.adaptive``) instead of PGD, each also divided by FGM's
(APR's) epoch of the same round. With ``--cpu-time`` an epoch is the CPU time this process spent
in it instead of the wall time, which the other processes of a busy machine inflate while they
hold the cores (run it with ``OMP_NUM_THREADS=1``: idle threads spinning would count too).

    .venv/bin/python benchmarks/epoch_time.py [--epochs 30] [--steps 1,3,10] [--adaptive]
        [--cpu-time]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.optim import Optimizer

from advrec.adversarial import AdversarialObjective, Attack
from advrec.adversarial.memory import DeltaMemory
from advrec.config import build_config
from advrec.data import load_dataset, prepare
from advrec.models import LOSSES, build_model
from advrec.train.allocator import tune_malloc
from advrec.train.loop import train_epoch
from advrec.train.optim import make_optimizer
from advrec.train.tasks import PairTask, Task

ROOT = Path(__file__).resolve().parents[1]


Run = tuple[torch.nn.Module, Optimizer, torch.Generator]
"""One method's training state: its objective (model inside; DDP-wrapped on several workers),
optimizer and generator."""


def interleaved_epochs(runs: dict[str, Run], task: Task, batch_size: int, rounds: int,
                       clean: str, clock: Callable[[], float] = time.perf_counter,
                       schedules: dict[str, tuple[int, DeltaMemory | None]] | None = None
                       ) -> dict[str, list[float]]:
    """Each method's epoch time in each of ``rounds`` rounds; a round trains one epoch of every
    method back to back (in reverse order every other round, so none always runs first or
    last); ``clean`` names the method that trains without its adversary. ``schedules``: a
    method's ``adv.schedule`` state, (replays, δ memory), as `train_epoch` takes them."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds):
        order = list(runs.items())
        for name, (objective, optimizer, generator) in order[::-1] if round_ % 2 else order:
            replays, memory = (schedules or {}).get(name, (1, None))
            start = clock()
            train_epoch(objective, optimizer, task, batch_size, adversarial=name != clean,
                        generator=generator, replays=replays, memory=memory)
            times[name].append(clock() - start)
    return times


def median_ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """The median over rounds of ``name``'s epoch over ``base``'s epoch of the same round: the
    ratio within a round cancels the slow drifts of a shared machine, the median drops the
    bursts."""
    return statistics.median(t / b for t, b in zip(times[name], times[base]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", default="1,3,10", help="PGD step counts K to time")
    parser.add_argument("--adaptive", action="store_true",
                        help="time adv.adaptive=vat and pamacf against FGM instead of PGD")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time epochs by this process's CPU time instead of the wall clock")
    parser.add_argument("--keep-malloc", action="store_true",
                        help="skip the training loop's malloc tuning, to measure what it buys")
    args = parser.parse_args()
    if not args.keep_malloc:
        tune_malloc()  # as the training loop does

    with tempfile.TemporaryDirectory() as tmp:
        prepare(str(args.data / "u.data"), "movielens", f"{tmp}/ml", seed=0)
        data = load_dataset(f"{tmp}/ml")
    cfg = build_config({"data": {"source": "unused"}})  # the shipped defaults: dim 64, batch 2048
    # name -> (attack, adv.adaptive)
    methods = {"bpr": (Attack("none", 0.0), "none"), "fgm": (Attack("fgm", 0.5), "none")}
    if args.adaptive:
        methods |= {name: (Attack("fgm", 0.5), name) for name in ("vat", "pamacf")}
    else:
        methods |= {f"pgd{k}": (Attack("pgd", 0.5, steps=k), "none")
                    for k in map(int, args.steps.split(","))}
    runs = {}
    for name, (attack, adaptive) in methods.items():
        torch.manual_seed(0)
        model = build_model(cfg, data)
        runs[name] = (AdversarialObjective(model, LOSSES["bpr"], attack, lam=1.0,
                                           adaptive=adaptive),
                      make_optimizer(model, cfg.train),
                      torch.Generator().manual_seed(0))
    task = PairTask(data, cfg.train.num_negatives)
    clock = time.process_time if args.cpu_time else time.perf_counter
    times = interleaved_epochs(runs, task, cfg.train.batch_size, args.epochs, "bpr", clock)

    def ratio(name: str, base: str) -> float:
        return median_ratio(times, name, base)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.epochs} interleaved rounds, {'CPU' if args.cpu_time else 'wall'} time\n")
    to_fgm = " ratio to FGM (median over rounds) |" if args.adaptive else ""
    print(f"| method | epoch s (median) | ratio to BPR (median over rounds) |{to_fgm} target |")
    print("|---|---|---|---|" + "---|" * bool(to_fgm))
    for name, values in times.items():
        if name in ("vat", "pamacf"):
            target = "≤ 1.05 × FGM"
        elif name.startswith("pgd"):
            target = f"≤ {1 + 0.5 * int(name[3:]):.1f}"
        else:
            target = "1.0" if name == "bpr" else "≤ 1.6"
        fgm = f" {ratio(name, 'fgm'):.3f} |" if to_fgm else ""
        print(f"| {name} | {statistics.median(values):.4f} | {ratio(name, 'bpr'):.2f} |{fgm} "
              f"{target} |")


if __name__ == "__main__":
    main()
