"""Run-directory reports: robustness evaluation of a trained run, and plain-text tables."""

from __future__ import annotations

from typing import Any

import torch

from advrec import io
from advrec.config import RunConfig
from advrec.data import load_dataset
from advrec.metrics import robustness_curve
from advrec.metrics.plots import plot_robustness
from advrec.train import load_model, read_run
from advrec.train.allocator import tune_malloc
from advrec.train.tasks import make_loss, make_task

ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"
ATTACK_BATCH = 8192  # training examples per gradient pass of the attack (bounds its memory)


def headline(cfg: RunConfig) -> list[str]:
    """The metrics shown in summaries, the first two also plotted: NDCG, Recall, Hit and MRR at
    the smallest K (ranking); AUC, gAUC and log-loss (CTR); the click's AUC and log-loss and the
    rating's RMSE (multi-task)."""
    if cfg.kind == "ctr":
        return ["auc", "gauc", "logloss"]
    if cfg.kind == "multitask":
        return ["click/auc", "rating/rmse", "click/logloss"]
    return [f"{m}@{cfg.eval.ks[0]}" for m in ("ndcg", "recall", "hit", "mrr")]


def evaluate_run(run: str, attacks: list[str], eps: list[float], steps: int | None,
                 split: str = "test", progress: bool = True) -> dict[str, Any]:
    """Attack a trained run at each ε; merge into ``robustness.json`` and redraw its plot."""
    tune_malloc()
    cfg, dataset = read_run(run)
    updates: dict[str, Any] = {"attacks": attacks, "eps": eps}
    if steps is not None:
        updates["steps"] = steps
    eval_cfg = cfg.eval.model_validate({**cfg.eval.model_dump(), **updates})
    data = load_dataset(dataset)
    model, _ = load_model(io.join(run, "checkpoint", "model.pt"), cfg, data)
    task = make_task(cfg, data)
    # every training example with its negatives, the same for each attack step (APR's protocol)
    batches = list(task.batches(ATTACK_BATCH, torch.Generator().manual_seed(eval_cfg.seed),
                                shuffle=False))
    curve = robustness_curve(model, task, make_loss(cfg), eval_cfg, batches, split=split,
                             progress=progress)
    path = io.join(run, ROBUSTNESS_FILE)
    merged = io.read_json(path) if io.exists(path) else {}
    for attack, by_eps in curve.items():
        merged.setdefault(attack, {}).update(by_eps)
    io.dump_json(path, merged)
    plot_robustness({run.rstrip("/").rsplit("/", 1)[-1]: merged}, headline(cfg)[:2],
                    io.join(run, ROBUSTNESS_PLOT))
    return merged


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Right-aligned plain-text table; floats with 4 decimals."""
    cells = [[str(c) for c in columns]] + [
        [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)
