"""ml-100k benchmark: quality, robustness and epoch time of BPR, APR (FGM) and PGD-AT, vs RecBole.

Runs the shipped configs `jobs/configs/ml100k-{bpr,apr,pgd}.yaml` as they are, overriding only
``data.source``, ``data.format`` and ``train.seed``; attacks every trained model with FGM and PGD
(10 steps) at ε = 0.5, with the beyond-accuracy metrics of the test top-10 lists (issue 22:
coverage, Gini, popularity, tail, novelty, diversity) clean and under FGM; and, when the RecBole venv exists (``benchmarks/recbole/setup.sh``), runs
RecBole 1.2.1's BPR in the same run for the epoch-time ratio. Timings are ratios against a
baseline measured in the same run. Results: ``benchmarks/out/ml100k.json`` and a Markdown table
on stdout (copied into benchmarks/README.md).

    .venv/bin/python benchmarks/ml100k.py [--seeds 0,1,2] [--data ../shared/data/ml-100k]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from advrec.config import load_config
from advrec.config.policy import BEYOND
from advrec.report import evaluate_run
from advrec.train import run_training

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {name: ROOT / "jobs" / "configs" / f"ml100k-{name}.yaml" for name in ("bpr", "apr", "pgd")}
RECBOLE_PY = ROOT / "benchmarks" / ".recbole-venv" / "bin" / "python"
EPS = "0.5"


def mean(values: list[float]) -> float:
    return statistics.fmean(values)


def run_advrec(name: str, seed: int, data: Path, out: Path) -> dict:
    """Train one shipped config for one seed, attack it, and collect the figures."""
    cfg = load_config(CONFIGS[name], [f"data.source={data / 'u.data'}", "data.format=movielens",
                                      f"train.seed={seed}"])
    run = out / f"{name}-seed{seed}"
    start = time.perf_counter()
    metrics = run_training(cfg, str(run), progress=False)
    wall = time.perf_counter() - start
    curve = evaluate_run(str(run), ["fgm", "pgd"], [0.0, float(EPS)], steps=10, progress=False,
                         beyond=True)
    history = json.loads((run / "history.json").read_text())
    # epoch time of the phase the method is about: adversarial epochs for APR / PGD-AT
    phase = [h["train_s"] for h in history if h["adversarial"] == (cfg.adv.method != "none")]
    clean = curve["fgm"]["0.0"]["ndcg@10"]
    return {
        "method": name, "seed": seed, "wall_s": wall, "epochs": len(history),
        "best_epoch": metrics["best_epoch"], "epoch_s": statistics.median(phase),
        "test": metrics["test"],
        "drop_fgm": (clean - curve["fgm"][EPS]["ndcg@10"]) / clean,
        "drop_pgd": (clean - curve["pgd"][EPS]["ndcg@10"]) / clean,
        "ndcg_fgm": curve["fgm"][EPS]["ndcg@10"], "ndcg_pgd": curve["pgd"][EPS]["ndcg@10"],
        # the beyond-accuracy metrics of the test lists, clean and under FGM at ε
        "beyond": {point: {m: curve["fgm"][eps][f"{m}@10"] for m in BEYOND}
                   for point, eps in (("clean", "0.0"), ("fgm", EPS))},
    }


def run_recbole(seed: int, data: Path) -> dict | None:
    if not RECBOLE_PY.exists():
        print("RecBole venv missing: run benchmarks/recbole/setup.sh for the side-by-side timing",
              file=sys.stderr)
        return None
    out = subprocess.run([str(RECBOLE_PY), str(ROOT / "benchmarks" / "recbole" / "run_recbole.py"),
                          "--data", str(data / "recbole"), "--seed", str(seed)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "ml100k")
    parser.add_argument("--no-recbole", action="store_true")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = [run_advrec(name, seed, args.data, args.out) for seed in seeds for name in CONFIGS]
    recbole = [] if args.no_recbole else [r for r in (run_recbole(s, args.data) for s in seeds) if r]

    by = {name: [r for r in rows if r["method"] == name] for name in CONFIGS}
    summary = {
        name: {
            "test_ndcg@10": mean([r["test"]["ndcg@10"] for r in rs]),
            "test_recall@10": mean([r["test"]["recall@10"] for r in rs]),
            "drop_fgm@0.5": mean([r["drop_fgm"] for r in rs]),
            "drop_pgd10@0.5": mean([r["drop_pgd"] for r in rs]),
            "epoch_s": mean([r["epoch_s"] for r in rs]),
            "epochs": mean([r["epochs"] for r in rs]),
        } for name, rs in by.items()
    }
    bpr_epoch = summary["bpr"]["epoch_s"]
    pgd_steps = load_config(CONFIGS["pgd"]).adv.steps
    ratios = {
        "apr_epoch / bpr_epoch": summary["apr"]["epoch_s"] / bpr_epoch,
        f"pgd{pgd_steps}_epoch / bpr_epoch": summary["pgd"]["epoch_s"] / bpr_epoch,
        "pgd target (1 + 0.5K)": 1 + 0.5 * pgd_steps,
    }
    if recbole:
        summary["recbole_bpr"] = {
            "test_ndcg@10": mean([r["test"]["ndcg@10"] for r in recbole]),
            "epoch_s": mean([r["train_epoch_s_median"] for r in recbole]),
        }
        ratios["advrec bpr_epoch / recbole bpr_epoch"] = bpr_epoch / summary["recbole_bpr"]["epoch_s"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"seeds": seeds, "runs": rows, "recbole": recbole, "summary": summary, "ratios": ratios},
        indent=2))

    print(f"| method | test NDCG@10 | test Recall@10 | NDCG drop FGM ε={EPS} | NDCG drop PGD-10 ε={EPS} "
          "| epoch s (median) | epochs run |")
    print("|---|---|---|---|---|---|---|")
    for name, s in summary.items():
        drop = (f"{100 * s['drop_fgm@0.5']:.1f}% | {100 * s['drop_pgd10@0.5']:.1f}%"
                if "drop_fgm@0.5" in s else "– | –")
        print(f"| {name} | {s['test_ndcg@10']:.4f} | {s.get('test_recall@10', float('nan')):.4f} | "
              f"{drop} | {s['epoch_s']:.3f} | {s.get('epochs', float('nan')):.0f} |")
    print()
    for k, v in ratios.items():
        print(f"- {k}: {v:.2f}")
    print(f"\nBeyond accuracy, test top-10 lists, clean / under FGM ε={EPS}:\n")
    print("| method | " + " | ".join(f"{m}@10" for m in BEYOND) + " |")
    print("|---" * (len(BEYOND) + 1) + "|")
    for name, rs in by.items():
        cells = [f"{mean([r['beyond']['clean'][m] for r in rs]):.4f} / "
                 f"{mean([r['beyond']['fgm'][m] for r in rs]):.4f}" for m in BEYOND]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
