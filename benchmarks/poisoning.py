"""Poisoning benchmark (issue 17): what fake users buy an attacker, and what resists them.

On ml-100k (RecBole's protocol: per-user random 8:1:1, MF dim 64, the shipped configs), for each
seed: 5 unpopular target items (`advrec poison --targets 5`, the same for every attack of a
seed), the clean log and every attack at each share of fake users. Every log trains BPR-MF,
APR (FGM), PGD-AT, VAT and PamaCF (APR's config with ``adv.adaptive``), and BPR-MF trains once
more on the log `advrec detect --remove F` cleaned (F = the number of fakes, so precision equals
recall). Reported: T-HR@50 and T-NDCG@50 of the targets (VAT's protocol, test split) and
Recall@20 and NDCG@20, means over the seeds; the detector's ROC-AUC; the surrogate attack's cost.
A finished run is kept under ``--out`` and not trained again, so an interrupted benchmark
continues where it stopped. Results: ``OUT/results.json`` and Markdown tables on stdout (copied
into benchmarks/README.md).

    .venv/bin/python benchmarks/poisoning.py [--seeds 0,1,2] [--shares 0.01,0.03]
        [--attacks random,average,bandwagon,segment,surrogate] [--methods bpr,apr,pgd,vat,pamacf,detect]
        [--data ../shared/data/ml-100k] [--out benchmarks/out/poisoning] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from advrec.config import load_config
from advrec.data.prepare import prepare
from advrec.poisoning.detect import Selection, detect
from advrec.poisoning.layout import TARGETS_FILE
from advrec.poisoning.poison import poison
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "jobs" / "configs"
ATTACKS = ("random", "average", "bandwagon", "segment", "surrogate")
METHODS = {  # name: (shipped config, overrides)
    "bpr": ("ml100k-bpr.yaml", []),
    "apr": ("ml100k-apr.yaml", []),
    "pgd": ("ml100k-pgd.yaml", []),
    "vat": ("ml100k-apr.yaml", ["adv.adaptive=vat"]),
    "pamacf": ("ml100k-apr.yaml", ["adv.adaptive=pamacf"]),
    "detect": ("ml100k-bpr.yaml", []),  # BPR-MF on the log `advrec detect` cleaned
}
LABELS = {"bpr": "BPR-MF", "apr": "APR (FGM)", "pgd": "PGD-AT", "vat": "VAT", "pamacf": "PamaCF",
          "detect": "BPR-MF, detect-cleaned log"}
K_TARGET, K = 50, 20


def train(method: str, data: Path, targets: Path, seed: int, run: Path,
          short: list[str]) -> dict[str, Any]:
    """One training run's figures (kept in ``run/metrics.json``: a finished run is reused);
    ``short``: overrides that cut the schedule (a smoke test's)."""
    if not (run / "metrics.json").exists():
        shutil.rmtree(run, ignore_errors=True)  # this benchmark's own run, stopped half-way
        config, overrides = METHODS[method]
        cfg = load_config(CONFIGS / config, [f"data.source={data}", "data.format=prepared",
                                             f"train.seed={seed}",
                                             f"eval.targets={targets}", *overrides, *short])
        run_training(cfg, str(run), progress=False)
    metrics = json.loads((run / "metrics.json").read_text())
    return {"t_hr": metrics["target"]["test"][f"hr@{K_TARGET}"],
            "t_ndcg": metrics["target"]["test"][f"ndcg@{K_TARGET}"],
            "recall": metrics["test"][f"recall@{K}"], "ndcg": metrics["test"][f"ndcg@{K}"]}


def logs(clean: Path, out: Path, seed: int, attacks: list[str],
         shares: list[float]) -> tuple[dict[str, Path], dict[str, float]]:
    """The seed's poisoned logs by name (``clean`` too) and each attack's seconds to poison."""
    named, cost = {"clean": clean}, {}
    for attack in attacks:
        for share in shares:
            name = f"{attack}@{share:g}"
            path = out / f"seed{seed}" / "data" / name
            if not (path / "meta.json").exists():
                start = time.perf_counter()
                poison(str(clean), str(path), attack, fake_users=share, targets=5, seed=seed)
                cost[name] = time.perf_counter() - start
            named[name] = path
    return named, cost


def cleaned_log(data: Path, output: Path) -> dict[str, Any]:
    """`advrec detect` on ``data``: with fakes, it removes as many users as there are fakes
    (the detector is told their number, not who they are). Returns ``detection.json``."""
    if not (output / "detection.json").exists():
        poisoned = json.loads((data / "meta.json").read_text()).get("poison")
        detect(str(data), str(output), Selection(top=poisoned["fake_users"]) if poisoned else None)
    return json.loads((output / "detection.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shares", default="0.01,0.03")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "poisoning")
    parser.add_argument("--epochs", type=int, help="a smoke test's schedule: this many epochs, "
                        "adversarial from the second (default: the shipped configs')")
    args = parser.parse_args()
    short = [] if args.epochs is None else [f"train.epochs={args.epochs}", "adv.start_epoch=1"]
    seeds = [int(s) for s in args.seeds.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    attacks, methods = args.attacks.split(","), args.methods.split(",")
    for name in [*attacks, *methods]:
        if name not in (*ATTACKS, *METHODS):
            parser.error(f"unknown attack or method {name!r}")

    clean = args.out / "clean"
    if not (clean / "meta.json").exists():
        prepare(str(args.data / "u.data"), "movielens", str(clean), split="random:0.8,0.1,0.1")
    rows, detection, cost = [], [], {}
    for seed in seeds:
        named, spent = logs(clean, args.out, seed, attacks, shares)
        cost.update({f"{k}/seed{seed}": v for k, v in spent.items()})
        # every attack of a seed picked the same targets: the clean log is measured on them
        targets = next(p for n, p in named.items() if n != "clean") / TARGETS_FILE
        for name, path in named.items():
            cleaned = args.out / f"seed{seed}" / "detect" / name
            if "detect" in methods:
                report = cleaned_log(path, cleaned)
                if report["against_fakes"]:
                    detection.append({"log": name, "seed": seed, **report["against_fakes"]})
            for method in methods:
                if method == "detect" and name == "clean":
                    continue
                run = args.out / f"seed{seed}" / "runs" / f"{name}-{method}"
                data = cleaned if method == "detect" else path
                rows.append({"log": name, "method": method, "seed": seed,
                             **train(method, data, targets, seed, run, short)})
                print(json.dumps(rows[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(
        {"runs": rows, "detection": detection, "poison_s": cost}, indent=1))
    print(table(rows, methods), detection_table(detection), sep="\n\n")
    if cost:
        print("\nseconds to poison:", json.dumps(cost, indent=1))


def table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """One Markdown table: a row per (log, method), means over the seeds."""
    head = (f"| log | method | T-HR@{K_TARGET} | T-NDCG@{K_TARGET} | Recall@{K} | NDCG@{K} | "
            f"T-HR@{K_TARGET} vs BPR-MF |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    logs_seen = list(dict.fromkeys(r["log"] for r in rows))
    for log in logs_seen:
        mean = {m: {key: statistics.fmean(r[key] for r in rows
                                          if r["log"] == log and r["method"] == m)
                    for key in ("t_hr", "t_ndcg", "recall", "ndcg")}
                for m in methods if any(r["log"] == log and r["method"] == m for r in rows)}
        for method, m in mean.items():
            base = mean.get("bpr", {}).get("t_hr")
            change = f"{100 * (m['t_hr'] - base) / base:+.1f} %" if base else ""
            lines.append(f"| {log} | {LABELS[method]} | {m['t_hr']:.4f} | {m['t_ndcg']:.4f} | "
                         f"{m['recall']:.4f} | {m['ndcg']:.4f} | {change} |")
    return "\n".join(lines)


def detection_table(detection: list[dict[str, Any]]) -> str:
    """The detector against the known fakes, means over the seeds."""
    lines = ["| log | ROC-AUC | precision = recall at F |", "|---|---|---|"]
    for log in dict.fromkeys(d["log"] for d in detection):
        mine = [d for d in detection if d["log"] == log]
        lines.append(f"| {log} | {statistics.fmean(d['roc_auc'] for d in mine):.4f} | "
                     f"{statistics.fmean(d['precision'] for d in mine):.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
