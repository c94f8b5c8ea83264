"""Run-directory reports: robustness evaluation of a trained run, and plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, cast

import ray.train
import torch

from advrec import io
from advrec.adversarial.jsma_fields import check_fields
from advrec.config import BUDGET_ATTACKS, RunConfig, no_fields, no_histories
from advrec.config.policy import FEATURE_MODELS, TARGET_METRICS
from advrec.data import load_dataset
from advrec.devices import train_device
from advrec.errors import AdvrecError, shown
from advrec.metrics import robustness_curve
from advrec.metrics.history_attack import budget_curve, longest_history
from advrec.metrics.plots import BUDGET, curve_points, plot_robustness
from advrec.metrics.profile_attack import jsma_fields_curve
from advrec.metrics.robustness import attack_batches
from advrec.metrics.target import TargetItems, TargetMetrics, listed_targets, resolve_targets
from advrec.models import build_model
from advrec.models.fields import FieldModel
from advrec.train import launch, load_model, read_run
from advrec.train.allocator import tune_malloc
from advrec.train.checkpoint import model_url
from advrec.train.tasks import LABELS, make_loss, make_task

ROBUSTNESS_FILE = "robustness.json"
ROBUSTNESS_PLOT = "robustness.png"
DEFAULT_BUDGETS = [0, 1, 2]
"""The budgets (history items swapped, feature fields changed) of ``jsma-items`` and
``jsma-fields`` when none are given."""
TARGETED = ":targeted"
"""The suffix of a targeted attack's curve (``jsma-items:targeted``), kept beside the
untargeted one."""


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


def _is_curve(section: Any) -> bool:
    """Whether ``section`` is one attack's curve as `evaluate_run` writes it: ``{eps: {metric:
    value}}``, or ``{"budget": {budget: {metric: value}}}`` with, when targeted, ``targets``
    (raw item ids)."""
    if not isinstance(section, dict):
        return False
    if BUDGET in section:
        points = section[BUDGET]
        if set(section) - {BUDGET, "targets"} or not isinstance(points, dict) or not all(
                key.isdigit() for key in points):
            return False
    else:
        points = section
        if not all(_is_number(eps) for eps in points):
            return False
    return bool(points) and all(isinstance(values, dict) for values in points.values())


def read_robustness(run: str, metrics: Sequence[str] = ()) -> dict[str, Any]:
    """The run's ``robustness.json``, checked to be what `evaluate_run` writes,
    ``{attack: {eps: {metric: number}}}`` and, for attacks on real inputs,
    ``{attack: {"budget": {budget: {metric: number}}}}``, and to hold each of ``metrics`` in
    some curve (every point of it: a targeted curve has the target metrics, others may not)."""
    path = io.join(run, ROBUSTNESS_FILE)
    if not io.exists(path):
        raise AdvrecError(f"{path}: not found; run `advrec evaluate --run {run}` first")
    curve = io.read_json(path)
    if not (isinstance(curve, dict) and curve and all(map(_is_curve, curve.values()))):
        raise AdvrecError(f"{path}: not a robustness curve ({{attack: {{eps: {{metric: value}}}}}}"
                          "); run `advrec evaluate` again")
    # the metrics each curve has at every point
    complete = [set.intersection(*(set(v) for v in curve_points(section).values()))
                for section in curve.values()]
    for metric in metrics:
        if not any(metric in c for c in complete):
            raise AdvrecError(f"{path}: no curve has metric {shown(metric)} (they have "
                              f"{', '.join(sorted(set().union(*complete)))}); choose one with "
                              "--metric")
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
                 l0: int | None = None, budgets: list[int] | None = None,
                 similarity: float | None = None,
                 target_items: list[str] | None = None,
                 beyond: bool | None = None) -> dict[str, Any]:
    """Attack a trained run at each ε (at each budget for ``jsma-items``, SASRec's histories,
    and ``jsma-fields``, a labelled feature model's fields); merge into ``robustness.json`` and
    redraw its plot.

    ``steps`` and ``l0`` (JSMA's coordinates per row) default to the run's ``eval`` section.
    ``budgets`` (default `DEFAULT_BUDGETS`) and ``similarity`` are ``jsma-items``': history
    items swapped, and the substitutes' least cosine with the items they replace.
    ``target_items`` (raw ids) makes ``jsma-items`` targeted, promoting them (its curve is
    ``jsma-items:targeted``), and are the target items every point measures.

    ``beyond``: every point also gets the beyond-accuracy metrics of its top-K lists
    (`advrec.metrics.beyond`; default: the run's ``eval.beyond``).

    ``workers``: Ray Train workers sharing the work (default: the run's ``scaling.num_workers``;
    0 runs in this process); ``address`` as for `advrec.train.run_training`. Every point also
    has the target items' metrics (``target/hr@K``, ``target/ndcg@K``) when there are target
    items: those of the ``targets.json`` at ``targets``, else the run's (``eval.targets``, else
    its dataset's ``targets.json``).
    """
    cfg, dataset = read_run(run)
    given = budgets is not None
    budgets = DEFAULT_BUDGETS if budgets is None else budgets
    if target_items is not None and not set(attacks) <= set(BUDGET_ATTACKS):
        # an ε curve records no targets: its points would mix target sets across calls
        raise AdvrecError("--target-items: only jsma-items and jsma-fields are targeted; name "
                          "only them in --attack (fgm, pgd and jsma in another call, or "
                          "measure a targets.json with --targets)")
    if beyond and cfg.kind != "ranking":
        raise AdvrecError(f"--beyond: the run's model.name={cfg.model.name} is evaluated by "
                          f"{', '.join(cfg.reported_metrics())}, not by top-K lists")
    if beyond and cfg.eval.protocol != "full":
        raise AdvrecError(f"--beyond: the run's eval.protocol={cfg.eval.protocol} ranks a few "
                          "sampled items; the beyond-accuracy metrics are of top-K lists of the "
                          "whole catalogue (eval.protocol=full)")
    if "jsma-items" in attacks:
        _check_budgets(cfg, dataset, budgets, split)
    if "jsma-fields" in attacks:
        _check_field_budgets(cfg, dataset, budgets, target_items is not None, given)
    eval_cfg = cfg.eval if targets is None else cfg.eval.model_copy(update={"targets": targets})
    # a bad or unknown target fails before the attacks
    items = (resolve_targets(eval_cfg, dataset) if target_items is None
             else listed_targets(target_items, dataset, "--target-items"))
    for name in (ROBUSTNESS_FILE, ROBUSTNESS_PLOT):  # a bad one fails before the attacks
        io.check_file(io.join(run, name))
    if io.exists(io.join(run, ROBUSTNESS_FILE)):  # merged into after the attacks
        read_robustness(run)
    scaling = cfg.scaling if workers is None else cfg.scaling.model_copy(
        update={"num_workers": workers})
    return launch(robustness_per_worker,
                  {"run": io.absolute(run), "attacks": attacks, "eps": eps, "steps": steps,
                   "l0": l0, "beyond": beyond, "budgets": budgets, "similarity": similarity,
                   "targeted": target_items is not None,
                   "split": split, "progress": progress, "ray_worker": scaling.num_workers > 0,
                   "targets": asdict(items) if items else None},
                  scaling, address)


def _check_budgets(cfg: RunConfig, dataset: str, budgets: list[int], split: str) -> None:
    """A history attack needs a model with histories, and budgets it can spend: at most the
    longest history of the ``split``'s contexts."""
    if cfg.model.name != "sasrec":
        raise AdvrecError(no_histories("--attack jsma-items", cfg.model.name))
    longest = longest_history(make_task(cfg, load_dataset(dataset)), split)
    if max(budgets) > longest:
        raise AdvrecError(f"--budget {max(budgets)}: above the longest history of the run's "
                          f"{split} users, {longest} items (jsma-items swaps at most that many)")


def _check_field_budgets(cfg: RunConfig, dataset: str, budgets: list[int],
                         targeted: bool, given: bool = True) -> None:
    """A field attack needs a feature model with fields to change, at most ``budgets`` of them:
    every feature field of a labelled model's examples (untargeted), else each user's profile
    fields (`advrec.metrics.profile_attack`: two-tower's ranking, and every targeted attack)."""
    what = "--attack jsma-fields"
    if cfg.model.name not in FEATURE_MODELS:
        raise AdvrecError(no_fields(what, cfg.model.name))
    with torch.device("meta"):  # only the fields' names are needed: no table is allocated
        model = cast(FieldModel, build_model(cfg, load_dataset(dataset)))
    if targeted or not LABELS[cfg.kind]:
        fields, holder = model.user_fields(), "each user's profile"
        if model.feature_fields() and not fields:
            why = "with --target-items" if targeted else f"on {cfg.model.name} (it ranks items)"
            raise AdvrecError(f"{what} {why} changes the users' profiles, and the run has no "
                              f"user features (only item ones; {dataset}'s user features less "
                              "data.exclude_features)")
    else:
        fields, holder = list(model.feature_fields()), "each example"
    budget = (f"--budget {max(budgets)}" if given else
              f"--budget's default {','.join(map(str, budgets))} (give a smaller --budget)")
    check_fields(fields, max(budgets), what, budget, dataset, holder)


def robustness_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """One worker's share of `evaluate_run` (``config`` holds its arguments); rank 0 writes."""
    tune_malloc()
    run = config["run"]
    cfg, dataset = read_run(run)
    embedding = [a for a in config["attacks"] if a not in BUDGET_ATTACKS]
    updates: dict[str, Any] = {"attacks": embedding, "eps": config["eps"]}
    updates |= {k: config[k] for k in ("steps", "l0", "beyond") if config[k] is not None}
    eval_cfg = cfg.eval.model_validate({**cfg.eval.model_dump(), **updates})
    context = ray.train.get_context()
    rank = context.get_world_rank()
    data = load_dataset(dataset)
    model, _ = load_model(model_url(run), cfg, data)
    model.to(train_device(cfg.scaling.use_gpu, config["ray_worker"]))
    task = make_task(cfg, data, shard=(rank, context.get_world_size()))
    items = TargetItems(**config["targets"]) if config["targets"] else None
    targets = TargetMetrics(data, items, cfg.eval.target_k) if items else None
    path = io.join(run, ROBUSTNESS_FILE)
    merged = io.read_json(path) if io.exists(path) else {}
    if embedding:
        # every training example with its negatives, the same for each attack step (APR's
        # protocol) and on every worker; each differentiates its share of them
        batches = attack_batches(make_task(cfg, data), 0, eval_cfg.seed)
        curve = robustness_curve(model, task, make_loss(cfg), eval_cfg, batches,
                                 split=config["split"],
                                 progress=config["progress"] and rank == 0, targets=targets)
        for attack, by_eps in curve.items():
            merged.setdefault(attack, {}).update(by_eps)
    if "jsma-items" in config["attacks"]:
        promote = items if config["targeted"] else None
        points = budget_curve(model, task, eval_cfg, config["budgets"], config["similarity"],
                              config["split"], targets,
                              None if promote is None else torch.tensor(promote.indices))
        _merge_budgets(merged, "jsma-items", points, promote)
    if "jsma-fields" in config["attacks"]:
        promote = items if config["targeted"] else None
        points = jsma_fields_curve(cast(FieldModel, model), task, make_loss(cfg), eval_cfg,
                                   config["budgets"], bool(LABELS[cfg.kind]), config["split"],
                                   targets,
                                   None if promote is None else torch.tensor(promote.indices))
        _merge_budgets(merged, "jsma-fields", points, promote)
    if rank == 0:
        io.dump_json(path, merged)
        plot_robustness({run.rstrip("/").rsplit("/", 1)[-1]: merged}, headline(cfg)[:2],
                        io.join(run, ROBUSTNESS_PLOT))
    return merged


def _merge_budgets(merged: dict[str, Any], attack: str, points: dict[str, Any],
                   promote: TargetItems | None) -> None:
    """Merge a budget curve into ``robustness.json``'s contents: ``attack``'s, or when it
    promoted target items ``attack:targeted``'s, which names them and is replaced whole when
    they changed (points of different targets are not one curve)."""
    if promote is None:
        merged.setdefault(attack, {}).setdefault(BUDGET, {}).update(points)
        return
    name = attack + TARGETED
    if merged.get(name, {}).get("targets") != promote.items:
        merged[name] = {BUDGET: {}, "targets": promote.items}
    merged[name][BUDGET].update(points)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Right-aligned plain-text table; floats with 4 decimals."""
    cells = [[str(c) for c in columns]] + [
        [f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells)
