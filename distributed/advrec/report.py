"""Run-directory reports: robustness evaluation of a trained run, and plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import ray.train

from advrec import io
from advrec.config import RunConfig
from advrec.config.policy import TARGET_METRICS
from advrec.data import load_dataset
from advrec.devices import train_device
from advrec.errors import AdvrecError, shown
from advrec.metrics import robustness_curve
from advrec.metrics.plots import plot_robustness
from advrec.metrics.robustness import attack_batches
from advrec.metrics.target import TargetItems, TargetMetrics, resolve_targets
from advrec.train import launch, load_model, read_run
from advrec.train.allocator import tune_malloc
from advrec.train.tasks import make_loss, make_task

ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"


def headline(cfg: RunConfig) -> list[str]:
    """The metrics shown in summaries, the first two also plotted: NDCG, Recall, Hit and MRR at
    the smallest K (ranking); AUC, gAUC and log-loss (CTR); the click's AUC and log-loss and the
    rating's RMSE (multi-task)."""
    if cfg.kind == "ctr":
        return ["auc", "gauc", "logloss"]
    if cfg.kind == "multitask":
        return ["click/auc", "rating/rmse", "click/logloss"]
    return [f"{m}@{cfg.eval.ks[0]}" for m in ("ndcg", "recall", "hit", "mrr")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_robustness(run: str, metrics: Sequence[str] = ()) -> dict[str, Any]:
    """The run's ``robustness.json``, checked to be what `evaluate_run` writes,
    ``{attack: {eps: {metric: number}}}``, and to hold each of ``metrics``."""
    path = io.join(run, ROBUSTNESS_FILE)
    if not io.exists(path):
        raise AdvrecError(f"{path}: not found; run `advrec evaluate --run {run}` first")
    curve = io.read_json(path)
    if not (isinstance(curve, dict) and curve and all(
            isinstance(by_eps, dict) and by_eps and all(
                _is_number(eps) and isinstance(values, dict) for eps, values in by_eps.items())
            for by_eps in curve.values())):
        raise AdvrecError(f"{path}: not a robustness curve ({{attack: {{eps: {{metric: value}}}}}}"
                          "); run `advrec evaluate` again")
    points = [values for by_eps in curve.values() for values in by_eps.values()]
    for metric in metrics:
        if not all(metric in v for v in points):
            raise AdvrecError(f"{path}: no metric {shown(metric)} (it has "
                              f"{', '.join(sorted(points[0]))}); choose one with --metric")
    return curve


def read_target(run: str) -> dict[str, Any]:
    """The ``target`` section of the run's ``metrics.json`` (`advrec.train.loop`), checked to
    hold the test split's ``hr@K`` and ``ndcg@K`` for its ``k``."""
    path = io.join(run, "metrics.json")
    if not io.exists(path):
        raise AdvrecError(f"{path}: not found; is {run} a finished run of `advrec train`?")
    metrics = io.read_json(path)
    section = metrics.get("target") if isinstance(metrics, dict) else None
    if section is None:
        raise AdvrecError(f"{path}: no target metrics; train with target items (eval.targets, "
                          "--targets, or a dataset that `advrec poison` made)")
    k = section.get("k") if isinstance(section, dict) else None
    test = section.get("test") if isinstance(section, dict) else None
    if not (isinstance(k, int) and isinstance(test, dict) and all(
            isinstance(test.get(f"{m}@{k}"), (int, float)) for m in TARGET_METRICS)):
        raise AdvrecError(f"{path}: its target section is not what `advrec train` writes "
                          "({\"k\": K, \"test\": {\"hr@K\": ..., \"ndcg@K\": ...}, ...})")
    return section


def evaluate_run(run: str, attacks: list[str], eps: list[float], steps: int | None,
                 split: str = "test", progress: bool = True, workers: int | None = None,
                 address: str | None = None, targets: str | None = None,
                 l0: int | None = None) -> dict[str, Any]:
    """Attack a trained run at each ε; merge into ``robustness.json`` and redraw its plot.

    ``steps`` and ``l0`` (JSMA's coordinates per row) default to the run's ``eval`` section.

    ``workers``: Ray Train workers sharing the work (default: the run's ``scaling.num_workers``;
    0 runs in this process); ``address`` as for `advrec.train.run_training`. Every point also
    has the target items' metrics (``target/hr@K``, ``target/ndcg@K``) when there are target
    items: those of the ``targets.json`` at ``targets``, else the run's (``eval.targets``, else
    its dataset's ``targets.json``).
    """
    cfg, dataset = read_run(run)
    eval_cfg = cfg.eval if targets is None else cfg.eval.model_copy(update={"targets": targets})
    items = resolve_targets(eval_cfg, dataset)  # a bad or unknown target fails before the attacks
    for name in (ROBUSTNESS_FILE, ROBUSTNESS_PLOT):  # a bad one fails before the attacks
        io.check_file(io.join(run, name))
    if io.exists(io.join(run, ROBUSTNESS_FILE)):  # merged into after the attacks
        read_robustness(run)
    scaling = cfg.scaling if workers is None else cfg.scaling.model_copy(
        update={"num_workers": workers})
    return launch(robustness_per_worker,
                  {"run": io.absolute(run), "attacks": attacks, "eps": eps, "steps": steps,
                   "l0": l0,
                   "split": split, "progress": progress, "ray_worker": scaling.num_workers > 0,
                   "targets": asdict(items) if items else None},
                  scaling, address)


def robustness_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One worker's share of `evaluate_run` (``config`` holds its arguments); rank 0 writes."""
    tune_malloc()
    run = config["run"]
    cfg, dataset = read_run(run)
    updates: dict[str, Any] = {"attacks": config["attacks"], "eps": config["eps"]}
    updates |= {k: config[k] for k in ("steps", "l0") if config[k] is not None}
    eval_cfg = cfg.eval.model_validate({**cfg.eval.model_dump(), **updates})
    context = ray.train.get_context()
    rank = context.get_world_rank()
    data = load_dataset(dataset)
    model, _ = load_model(io.join(run, "checkpoint", "model.pt"), cfg, data)
    model.to(train_device(cfg.scaling.use_gpu, config["ray_worker"]))
    # every training example with its negatives, the same for each attack step (APR's protocol)
    # and on every worker; each differentiates its share of them
    batches = attack_batches(make_task(cfg, data), 0, eval_cfg.seed)
    task = make_task(cfg, data, shard=(rank, context.get_world_size()))
    targets = (TargetMetrics(data, TargetItems(**config["targets"]), cfg.eval.target_k)
               if config["targets"] else None)
    curve = robustness_curve(model, task, make_loss(cfg), eval_cfg, batches,
                             split=config["split"], progress=config["progress"] and rank == 0,
                             targets=targets)
    path = io.join(run, ROBUSTNESS_FILE)
    merged = io.read_json(path) if io.exists(path) else {}
    for attack, by_eps in curve.items():
        merged.setdefault(attack, {}).update(by_eps)
    if rank == 0:
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
