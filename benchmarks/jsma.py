"""JSMA benchmark (issue 19): attacks that change a few real inputs, and training against them.

**SASRec** (``jobs/configs/ml100k-sasrec.yaml``, leave-one-out, ml-100k's RecBole atomic files as
`zoo.py` reads them), per seed, three models:

- ``twin``: the clean-trained twin (``adv.method=none``) and ``shipped``: the shipped config
  (embedding PGD-3 after 50 clean epochs; FGM before issue 18's re-tuning), both `zoo.py`'s runs (shared through ``--zoo-out``:
  a seed `zoo.py` trained is not trained again);
- ``jsma``: the shipped config with ``adv.method=jsma-items`` (``adv.budget`` 2, the same warm-up
  and λ), trained on histories with two items swapped by JSMA;
- ``jsma-one`` (only with ``--variants``): as ``jsma``, with ``adv.positions=one``: each
  history's swaps raise one random position's loss, the evaluation's threat;
- ``mix`` (only with ``--variants``): the shipped config with ``adv.mix`` adding jsma-items at
  budget 2, λ 1: embedding PGD-3 and swapped items at once;
- ``both`` (only with ``--variants``): ``jsma`` with ``adv.mix`` adding ``jsma-one`` at λ 0.3:
  swaps against every position's loss (which keeps the clean quality) and against one
  position's (which buys the robustness) at once.

``--variants`` picks which of them are trained and tested (default twin, shipped, jsma).

Each is tested under full ranking and the sampled protocol (100 negatives): clean, JSMA at
budget 1 and 2 (`advrec.metrics.history_attack`, untargeted: the held-out item's rank), the
control (1 or 2 history items, at random positions, swapped for random items; seeded), and
targeted JSMA at budget 1 and 2 toward ``--targets`` random items (T-HR@50 of them, each user
attacked toward all of them at once).

**Cost** (``--cost``): training epochs of the twin, FGM and JSMA-items at budget 1 and 2 on the
same data, interleaved (`epoch_time.interleaved_epochs`), each divided by the clean epoch of its
round, median over rounds.

**DeepFM** (``jobs/configs/ml100k-deepfm.yaml``, the CTR task), per seed: `zoo.py`'s clean twin
and shipped model (PGD-3 at a relative ε of 0.1), each tested under ``jsma-fields`` at budget 1
and 2 (`advrec.metrics.field_attack`: each test example's most salient user and item fields set
to their most damaging values, against its true label): test AUC and its relative fall; and
targeted (`advrec.metrics.profile_attack`: each user's profile changed to promote the
``--targets`` random items in the ranking by click logit): their T-HR@50.

**Two-tower** (``jobs/configs/ml100k-twotower.yaml``), per seed: `zoo.py`'s twin and shipped model
under ``jsma-fields`` on the users' profiles (age, gender, occupation), untargeted (test NDCG@10
of the full ranking from the changed profiles) and targeted (T-HR@50).

Results: ``OUT/results.json`` and Markdown tables on stdout (copied into benchmarks/README.md).
A trained run is reused while its config is unchanged (`zoo.trained`); evaluations are redone.

    .venv/bin/python benchmarks/jsma.py [--seeds 0,1,2] [--cost] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from epoch_time import interleaved_epochs, median_ratio
from torch import Tensor
from zoo import ROOT, run_one, trained

from advrec.adversarial import AdversarialObjective
from advrec.config import load_config
from advrec.data import load_dataset
from advrec.data.dataset import Dataset
from advrec.metrics.evaluate import ContextFn
from advrec.metrics.history_attack import budget_curve
from advrec.metrics.profile_attack import jsma_fields_curve
from advrec.metrics.robustness import point_metrics
from advrec.metrics.target import TargetItems, TargetMetrics
from advrec.models import build_model
from advrec.train import load_model, read_run
from advrec.train.loop import attack_from_config
from advrec.train.optim import make_optimizer
from advrec.train.tasks import LABELS, SequenceTask, make_loss, make_task

CONFIG = ROOT / "jobs" / "configs" / "ml100k-sasrec.yaml"
BUDGETS = [1, 2]
PROTOCOLS = ("full", "sampled")
METRIC = "ndcg@10"
FIELD_MODELS = {"deepfm": "auc", "twotower": METRIC}
"""The feature models under jsma-fields, each with its headline test metric."""


def random_swaps(task: SequenceTask, num_items: int, budget: int, seed: int) -> ContextFn:
    """The control attack's context: ``budget`` items of each history, at random real positions,
    swapped for random other items (from a generator seeded by ``seed`` afresh for each chunk,
    so a user's swaps depend only on its chunk)."""

    def context(users: Tensor, split: str) -> dict[str, Tensor]:
        seq = task.context(users, split)["seq"]  # (B, L), left-padded with task.pad
        generator = torch.Generator().manual_seed(seed)
        real = seq != task.pad
        # the top `budget` of random keys over the real positions: a uniform choice of them
        keys = torch.rand(seq.shape, generator=generator).masked_fill(~real, -1.0)
        position = keys.topk(budget, dim=1).indices  # (B, budget)
        old = seq.gather(1, position)
        # a shift in [1, N) modulo N: any item but the one there
        new = (old + torch.randint(1, num_items, old.shape, generator=generator)) % num_items
        swapped = seq.clone()
        swapped.scatter_(1, position, torch.where(real.gather(1, position), new, old))
        return {"seq": swapped}

    return context


def random_targets(data: Dataset, count: int, seed: int) -> tuple[Tensor, TargetMetrics]:
    """``count`` items drawn at random with ``seed`` (T,), and their T-HR@50 and T-NDCG@50."""
    picked = torch.randperm(data.num_items, generator=torch.Generator().manual_seed(seed))[:count]
    return picked, TargetMetrics(
        data, TargetItems("benchmark", [f"#{i}" for i in picked.tolist()], picked.tolist()), 50)


def attacked(run: Path, targets: int, seed: int) -> dict[str, Any]:
    """One trained SASRec run tested under each protocol, ``{protocol: {"jsma": {budget:
    metrics}, "random": {budget: metrics}}}``, and ``"targeted": {budget: metrics}`` with
    ``target/hr@50`` (budget "0": clean)."""
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    model, _ = load_model(str(run / "checkpoint" / "model.pt"), cfg, data)
    model.eval()
    task = make_task(cfg, data)
    picked, target_metrics = random_targets(data, targets, seed)
    out: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        eval_cfg = cfg.eval.model_copy(update={"protocol": protocol, "num_negatives": 100})
        jsma = budget_curve(model, task, eval_cfg, [0, *BUDGETS])
        random = {"0": jsma["0"], **{
            str(b): point_metrics(model, task, eval_cfg, "test",
                                  context=random_swaps(task, data.num_items, b, seed))
            for b in BUDGETS}}
        out[protocol] = {"jsma": jsma, "random": random}
    # T-HR ranks every item whatever the protocol: one targeted curve
    out["targeted"] = budget_curve(model, task, cfg.eval, [0, *BUDGETS], targets=target_metrics,
                                   promote=picked)
    return out


def drop(points: dict[str, dict[str, float]], budget: int) -> float:
    """The relative fall of `METRIC` at ``budget`` from the clean point."""
    clean = points["0"][METRIC]
    return (clean - points[str(budget)][METRIC]) / clean


ZOO_VARIANTS = {"twin": True, "shipped": False}
"""`zoo.py`'s SASRec runs: name -> trained clean."""
VARIANTS = {"jsma": ["adv.method=jsma-items", "adv.budget=2"],
            "jsma-one": ["adv.method=jsma-items", "adv.budget=2", "adv.positions=one"],
            "mix": ["adv.mix=[{method: jsma-items, budget: 2}]"],
            "both": ["adv.method=jsma-items", "adv.budget=2",
                     "adv.mix=[{method: jsma-items, budget: 2, positions: one, lambda: 0.3}]"]}
"""The SASRec runs trained here: name -> overrides of the shipped config."""


def sasrec_runs(seed: int, variants: list[str], data: Path, out: Path, zoo_out: Path,
                extra: list[str]) -> dict[str, Path]:
    """The SASRec runs ``variants`` of ``seed`` (trained when missing): twin and shipped
    (`zoo.py`'s), jsma and mix (here)."""
    runs = {}
    for name in variants:
        if name in ZOO_VARIANTS:
            clean = ZOO_VARIANTS[name]
            run_one("sasrec", seed, clean, data, zoo_out, extra)
            runs[name] = zoo_out / f"sasrec-{'clean' if clean else 'adv'}-seed{seed}"
            continue
        overrides = [f"data.source={data / 'recbole'}", "data.format=recbole",
                     f"train.seed={seed}", *VARIANTS[name], *extra]
        runs[name] = out / f"sasrec-{name}-seed{seed}"
        trained(load_config(CONFIG, overrides), runs[name])
    return runs


def fields_attacked(model_name: str, seed: int, data: Path, zoo_out: Path, targets: int,
                    extra: list[str]) -> dict[str, Any]:
    """A feature model's twin and shipped model of ``seed`` (`zoo.py`'s, trained when missing),
    each ``{"untargeted": {budget: metrics}, "targeted": {budget: metrics}}`` under
    ``jsma-fields`` (budget "0": clean): untargeted on each example's fields (a labelled model)
    or each user's profile (two-tower), targeted on the profiles toward ``targets`` random
    items."""
    out = {}
    for name, clean in (("twin", True), ("adv", False)):
        run_one(model_name, seed, clean, data, zoo_out, extra)
        run = zoo_out / f"{model_name}-{'clean' if clean else 'adv'}-seed{seed}"
        cfg, dataset = read_run(str(run))
        loaded = load_dataset(dataset)
        model, _ = load_model(str(run / "checkpoint" / "model.pt"), cfg, loaded)
        task = make_task(cfg, loaded)
        labelled = bool(LABELS[cfg.kind])
        picked, target_metrics = random_targets(loaded, targets, seed)
        out[name] = {
            "untargeted": jsma_fields_curve(model, task, make_loss(cfg), cfg.eval,
                                            [0, *BUDGETS], labelled),
            "targeted": jsma_fields_curve(model, task, make_loss(cfg), cfg.eval, [0, *BUDGETS],
                                          labelled, targets=target_metrics, promote=picked)}
    return out


def cost(run: Path, rounds: int) -> dict[str, float]:
    """Epoch time of each method over the twin's (median over ``rounds`` interleaved rounds):
    the twin's ``run`` config (the shipped one with ``adv.method=none``) on its dataset, each
    method from the same initial model."""
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    task = make_task(cfg, data)
    variants = {"twin": [], "fgm": ["adv.method=fgm"],
                **{f"jsma-items, budget {b}": ["adv.method=jsma-items", f"adv.budget={b}"]
                   for b in BUDGETS}}
    runs = {}
    for name, overrides in variants.items():
        variant = load_config(run / "config.yaml", overrides)
        torch.manual_seed(0)
        model = build_model(variant, data)
        runs[name] = (AdversarialObjective(model, make_loss(variant), attack_from_config(variant.adv),
                                           lam=variant.adv.lam),
                      make_optimizer(model, variant.train), torch.Generator().manual_seed(0))
    times = interleaved_epochs(runs, task, cfg.train.batch_size, rounds, "twin")
    return {name: median_ratio(times, name, "twin") for name in runs} | {
        "twin epoch s": statistics.median(times["twin"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default="sasrec,deepfm,twotower",
                        help="comma-separated: sasrec, deepfm, twotower")
    parser.add_argument("--variants", default="twin,shipped,jsma",
                        help=f"comma-separated SASRec runs: {', '.join([*ZOO_VARIANTS, *VARIANTS])}")
    parser.add_argument("--targets", type=int, default=5, help="target items of the targeted attack")
    parser.add_argument("--cost", type=int, default=0, metavar="ROUNDS",
                        help="also time training epochs in ROUNDS interleaved rounds")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "jsma")
    parser.add_argument("--zoo-out", type=Path, default=ROOT / "benchmarks" / "out" / "zoo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every run (e.g. train.epochs=2 for a smoke run)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = args.models.split(",")
    variants = args.variants.split(",")
    unknown = set(variants) - {*ZOO_VARIANTS, *VARIANTS}
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    if args.cost and ("twin" not in variants or "sasrec" not in models):
        # it times epochs from the SASRec twin's run config (was silently skipped)
        parser.error("--cost times SASRec epochs from the twin's run: it needs sasrec in "
                     "--models and twin in --variants")
    results: dict[str, Any] = {m: {} for m in models}
    for seed in seeds:
        for name in set(models) & set(FIELD_MODELS):
            results[name][seed] = fields_attacked(name, seed, args.data, args.zoo_out,
                                                  args.targets, args.set)
        if "sasrec" not in models:
            continue
        runs = sasrec_runs(seed, variants, args.data, args.out, args.zoo_out, args.set)
        results["sasrec"][seed] = {}
        for name, run in runs.items():
            start = time.perf_counter()
            results["sasrec"][seed][name] = attacked(run, args.targets, seed)
            print(f"seed {seed}, {name}: attacked in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr)
        if args.cost and seed == seeds[0]:
            results["cost"] = cost(runs["twin"], args.cost)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    report(results, seeds, models, variants)


def cell(values: list[float], percent: bool = False) -> str:
    """The mean of ``values``, each in brackets when several (in % with ``percent``)."""
    scale, unit, digits = (100, " %", 1) if percent else (1, "", 4)
    mean = f"{scale * statistics.fmean(values):.{digits}f}{unit}"
    if len(values) == 1:
        return mean
    return mean + " (" + " / ".join(f"{scale * v:.{digits}f}" for v in values) + ")"


def report(results: dict[str, Any], seeds: list[int], models: list[str],
           variants: list[str]) -> None:
    """Markdown tables of ``results`` (means over ``seeds``, per seed in brackets; SASRec's runs
    ``variants``)."""
    for model in set(models) & set(FIELD_MODELS):
        metric = FIELD_MODELS[model]
        print(f"\n{model}, test {metric} under jsma-fields (untargeted), and T-HR@50 of the "
              f"targets under targeted jsma-fields; seeds {seeds}; drop = relative fall\n")
        print(f"| model | clean | drop, budget 1 | budget 2 | {metric} at budget 2 "
              "| T-HR@50 clean | budget 1 | budget 2 |")
        print("|---|---|---|---|---|---|---|---|")
        for name in ("twin", "adv"):
            curves = [results[model][s][name]["untargeted"] for s in seeds]
            hits = [results[model][s][name]["targeted"] for s in seeds]
            clean = [c["0"][metric] for c in curves]
            drops = {b: [(c["0"][metric] - c[str(b)][metric]) / c["0"][metric] for c in curves]
                     for b in BUDGETS}
            print(f"| {name} | {cell(clean)} | {cell(drops[1], True)} | {cell(drops[2], True)} "
                  f"| {cell([c['2'][metric] for c in curves])} | " + " | ".join(
                      cell([h[b]["target/hr@50"] for h in hits], True) for b in ("0", "1", "2"))
                  + " |")
    if "sasrec" not in models:
        return
    sasrec = results["sasrec"]
    for protocol in PROTOCOLS:
        print(f"\nSASRec, {protocol} ranking, test {METRIC}; seeds {seeds}; drop = relative fall\n")
        print("| model | clean | JSMA drop, budget 1 | budget 2 | random drop, budget 1 | "
              "budget 2 | JSMA / random, budget 2 |")
        print("|---|---|---|---|---|---|---|")
        for name in variants:
            runs = [sasrec[s][name][protocol] for s in seeds]
            clean = [r["jsma"]["0"][METRIC] for r in runs]
            jsma = {b: [drop(r["jsma"], b) for r in runs] for b in BUDGETS}
            rand = {b: [drop(r["random"], b) for r in runs] for b in BUDGETS}
            # random swaps may cost nothing (or help): no ratio then
            ratio = (f"{statistics.fmean(jsma[2]) / statistics.fmean(rand[2]):.1f}×"
                     if statistics.fmean(rand[2]) > 0 else "random costs nothing")
            print(f"| {name} | {cell(clean)} | {cell(jsma[1], True)} | {cell(jsma[2], True)} | "
                  f"{cell(rand[1], True)} | {cell(rand[2], True)} | {ratio} |")
    print("\ntargeted JSMA (full ranking): T-HR@50 of the targets, clean, budget 1, budget 2\n")
    print("| model | clean | budget 1 | budget 2 |")
    print("|---|---|---|---|")
    for name in variants:
        points = [sasrec[s][name]["targeted"] for s in seeds]
        print(f"| {name} | " + " | ".join(
            cell([p[b]["target/hr@50"] for p in points], True) for b in ("0", "1", "2")) + " |")
    if "cost" in results:
        print("\nepoch time over the clean twin's, median over interleaved rounds "
              f"(twin epoch {results['cost']['twin epoch s']:.2f} s)\n")
        print("| method | ratio |")
        print("|---|---|")
        for name, ratio in results["cost"].items():
            if name != "twin epoch s":
                print(f"| {name} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
