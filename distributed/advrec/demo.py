"""`advrec demo`: APR against its clean-trained twin, end to end, with no network.

Writes a synthetic log (or uses ``--source``), trains BPR-MF and APR-MF (the same config plus an
FGM adversary after a clean warm-up), attacks both with FGM and PGD across ε, prints clean and
robust NDCG@10 side by side and draws both robustness curves in one plot.
"""

from __future__ import annotations

from typing import Any

from advrec import io
from advrec.config import build_config
from advrec.data import synth
from advrec.metrics.plots import plot_robustness
from advrec.report import ROBUSTNESS_PLOT, evaluate_run, format_table
from advrec.train import run_training

DEMO_EPS = [0.0, 0.25, 0.5, 1.0]
REPORT_EPS = "0.5"


def run_demo(output: str, source: str | None = None, epochs: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Train and attack the twins under ``output``; returns ``{run: robustness curve}``."""
    if source is None:
        source = io.join(output, "data", "synthetic")
        if not io.exists(source):
            synth(users=1000, items=800, interactions=40_000, output=source, seed=0)
    epochs = epochs or 60
    base = {"data": {"source": source, "cache_dir": io.join(output, "data", "prepared")},
            "model": {"name": "mf", "dim": 32},
            "train": {"epochs": epochs, "lr": 0.005, "batch_size": 1024, "patience": 0}}
    runs = {
        "bpr": base,
        # APR: a clean warm-up for the first half, then L_clean + 1.0 * L(x + delta_FGM)
        "apr": {**base, "adv": {"method": "fgm", "eps": 0.5, "lambda": 1.0,
                                 "start_epoch": epochs // 2}},
    }
    curves = {}
    for name, raw in runs.items():
        run = io.join(output, name)
        print(f"== training {name} -> {run}")
        run_training(build_config(raw), run, progress=progress)
        curves[name] = evaluate_run(run, ["fgm", "pgd"], DEMO_EPS, steps=10, progress=progress)
    rows = []
    for name, curve in curves.items():
        clean = curve["fgm"]["0.0"]["ndcg@10"]
        row: dict[str, Any] = {"model": name, "clean ndcg@10": clean}
        for attack in ("fgm", "pgd"):
            attacked = curve[attack][REPORT_EPS]["ndcg@10"]
            row[f"{attack} eps={REPORT_EPS}"] = attacked
            row[f"{attack} drop"] = f"{100 * (clean - attacked) / clean:.1f}%" if clean else "n/a"
        rows.append(row)
    print(format_table(rows, list(rows[0])))
    plot = io.join(output, ROBUSTNESS_PLOT)
    plot_robustness(curves, ["ndcg@10", "recall@10"], plot)
    print(f"plot: {plot}")
    return curves
