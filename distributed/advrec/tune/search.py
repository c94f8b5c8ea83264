"""The search: a Ray Tune experiment whose trials are `advrec train` runs.

A trial is a function that trains the base config with its own values of the searched keys
(`advrec.train.run_training`, so nothing of training is reimplemented) on its own Ray Train
workers: ``scaling.num_workers`` of them, at least 1 (Ray Train's in-process mode cannot report to
Tune).
Every epoch reports the valid metrics, the robust ones (``eval.robust_every``), the target
items' (``target/...``, with target items) and ``objective`` (``tune.weights``) to Tune, whose scheduler (ASHA by default) stops trials that fall behind.
The experiment directory holds Tune's state (so ``--resume`` continues it), each trial's run
directory under ``trials/``, and the tables, front, plot and ``best.yaml`` of
`advrec.tune.results`. Tune's state is pickled: Tune writes it through
`advrec.signing.SigningHandler`, which signs every file, and ``--resume`` refuses a directory
holding a file advrec did not sign.
"""

from __future__ import annotations

from typing import Any

import ray
import ray.tune
from pyarrow.fs import PyFileSystem

from advrec import io
from advrec.config import (
    RunConfig,
    SearchDim,
    build_config,
    dump_config,
    key_text,
    metric_mode,
    with_values,
)
from advrec.data.source import resolve_dataset
from advrec.errors import AdvrecError, shown
from advrec.metrics.target import check_targets_reported, resolve_targets
from advrec.signing import SigningHandler, verify
from advrec.train.checkpoint import has_train_state
from advrec.train.driver import connect, read_run, resume_training, run_cpus, run_training
from advrec.train.loop import epoch_metrics
from advrec.train.warm import check_init
from advrec.tune.results import BEST, FRONT, RESULTS, write_results

BASE_FILE = "base.yaml"
"""The searched config as given (the user's source, before any trial's values)."""
SEARCH_FILE = "search.json"
"""The raw config of every trial (on the prepared dataset) and the user's, for ``--resume``."""
_OWN = frozenset({BASE_FILE, SEARCH_FILE, f"{RESULTS}.csv", f"{RESULTS}.parquet",
                  f"{FRONT}.csv", f"{FRONT}.png", BEST})
"""advrec's own files in an experiment: read as JSON or YAML, or not at all."""


def _unpickled_by_none(name: str) -> bool:
    """Whether nothing unpickles the experiment's file ``name`` (a path relative to it), so it
    needs no signature: advrec's own files and the trials' run directories (whose checkpoints
    advrec reads with ``weights_only``). Every file Tune writes is signed."""
    return name in _OWN or name.startswith("trials/")


def _distribution(dim: SearchDim) -> Any:
    make = {"loguniform": lambda v: ray.tune.loguniform(*v), "uniform": lambda v: ray.tune.uniform(*v),
            "choice": ray.tune.choice, "grid": ray.tune.grid_search}
    return make[dim.kind](dim.values)


def check_space(raw: dict[str, Any], cfg: RunConfig) -> None:
    """Fail before any trial when a searched key, or a value at an end of its range, is not a
    valid config; when an epoch would report no metric to compare (no evaluation); and when
    ASHA's grace period outlasts the trials."""
    for key, dim in cfg.tune.space.items():
        for value in (dim.values if dim.kind in ("choice", "grid") else dim.values[:2]):
            try:
                build_config(with_values(raw, {key: value}))
            except AdvrecError as exc:
                raise AdvrecError(f"tune.space: {key_text(key)}={shown(value)}: {exc}") from None
    if cfg.train.eval_every != 1:
        raise AdvrecError("train.eval_every: a search compares trials at every epoch; set it to 1")
    if cfg.tune.scheduler == "asha" and cfg.tune.grace_period > cfg.train.epochs:
        raise AdvrecError(f"tune.grace_period={cfg.tune.grace_period} is more than "
                          f"train.epochs={cfg.train.epochs}: ASHA stops no trial before its "
                          "grace period; lower it, or set tune.scheduler=none")


def _trial(values: dict[str, Any], raw: dict[str, Any], experiment: str) -> None:
    """One trial: the base config with this trial's ``values``, trained into
    ``experiment/trials/<trial id>``; its epochs reach Tune as the run reports them. In a resumed
    search, a trial whose run had finished (before Tune recorded it) reports that run's epochs
    again instead of training again, and one interrupted after a checkpoint continues from it."""
    run = io.join(experiment, "trials", ray.tune.get_context().get_trial_id())
    if io.exists(io.join(run, "metrics.json")):
        cfg = read_run(run)[0]
        latest: dict[str, float] = {}
        for record in io.read_json(io.join(run, "history.json")):
            ray.tune.report(epoch_metrics(record, latest, cfg))
    elif has_train_state(run):
        resume_training(run, progress=False, tune=True)
    else:
        run_training(build_config(with_values(raw, values)), run, progress=False, tune=True)


def _tuner(raw: dict[str, Any], cfg: RunConfig, experiment: str, progress: bool,
           restore: bool) -> ray.tune.Tuner:
    fs, path = io.filesystem(experiment)
    parent, _, name = path.rstrip("/").rpartition("/")
    # Tune writes its (pickled) state through a handler that signs every file, for --resume
    storage = {"storage_path": parent or "/",
               "storage_filesystem": PyFileSystem(SigningHandler(fs))}
    # the trial's own process only waits on its Ray Train workers, which reserve their own
    trainable = ray.tune.with_resources(
        ray.tune.with_parameters(_trial, raw=raw, experiment=experiment), {"CPU": 0.01})
    if restore:
        return ray.tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True,
                                      storage_filesystem=storage["storage_filesystem"])
    # the scheduler and the searcher get their metrics themselves: Tune would hand its one
    # metric to the searcher, over a multi-objective searcher's list
    metric, mode = cfg.tune_metric()
    scheduler = None
    if cfg.tune.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epochs", metric=metric, mode=mode,
                                  max_t=cfg.train.epochs, grace_period=cfg.tune.grace_period,
                                  reduction_factor=cfg.tune.reduction_factor)
    if cfg.tune.search == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:  # pragma: no cover - depends on the optional extra
            raise AdvrecError("tune.search: optuna needs the extra: pip install 'advrec[optuna]'")
        if cfg.tune.objectives:  # multi-objective: Optuna's sampler pushes their front
            search = OptunaSearch(metric=cfg.tune.objectives, seed=cfg.tune.seed,
                                  mode=[metric_mode(m) for m in cfg.tune.objectives])
        else:
            search = OptunaSearch(metric=metric, mode=mode, seed=cfg.tune.seed)
        limit = cfg.tune.max_concurrent  # Tune wraps a Searcher in a ConcurrencyLimiter
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # a generator given to Tune keeps its own limit (Tune ignores max_concurrent_trials)
        search = BasicVariantGenerator(max_concurrent=cfg.tune.max_concurrent,
                                       random_state=cfg.tune.seed)
        limit = None
    return ray.tune.Tuner(
        trainable,
        param_space={key: _distribution(dim) for key, dim in cfg.tune.space.items()},
        tune_config=ray.tune.TuneConfig(
            num_samples=cfg.tune.num_samples, scheduler=scheduler,
            search_alg=search, max_concurrent_trials=limit),
        run_config=ray.tune.RunConfig(name=name, verbose=1 if progress else 0, **storage))


def _connect(cfg: RunConfig, address: str | None) -> None:
    """Ray with room for every concurrent trial: its workers (or itself) and its stream."""
    per_trial = run_cpus(cfg.scaling, streaming=cfg.data.stream)
    connect(address, cfg.tune.max_concurrent * per_trial + 1)  # + the trials' own processes


def run_tune(raw: dict[str, Any], experiment: str, progress: bool = True,
             address: str | None = None) -> dict[str, Any]:
    """Search ``raw``'s ``tune.space`` into the experiment directory ``experiment``; returns
    the summary of `advrec.tune.results.write_results`."""
    cfg = build_config(raw)
    check_space(raw, cfg)
    experiment = io.absolute(experiment)
    fs, path = io.filesystem(experiment)
    if fs.exists(path):
        raise AdvrecError(f"{experiment}: exists; continue it with `advrec tune --resume "
                          f"{experiment}`, or choose another --output")
    # prepared once here, not by every trial at once
    dataset = resolve_dataset(cfg.data)
    # a target metric to optimise with no target items, or a bad targets.json, fails now
    check_targets_reported(cfg, resolve_targets(cfg.eval, dataset), dataset)
    fixed = {"data.source": dataset, "data.format": "prepared",
             "scaling.num_workers": max(1, cfg.scaling.num_workers)}
    if cfg.eval.targets:  # the trials' workers do not share this working directory
        fixed["eval.targets"] = io.absolute(cfg.eval.targets)
    if cfg.train.init_from:  # a run that cannot start the trials fails here; made absolute
        fixed["train.init_from"] = check_init(cfg, dataset)[0].train.init_from
    trial_raw = with_values(raw, fixed)
    trials = build_config(trial_raw)
    fs.makedirs(path, exist_ok=True)
    try:
        with io.atomic_file(io.join(experiment, BASE_FILE)) as f:
            f.write(dump_config(cfg))
        io.dump_json(io.join(experiment, SEARCH_FILE), {"trials": trial_raw, "user": raw})
        _connect(trials, address)
        grid = _tuner(trial_raw, trials, experiment, progress, restore=False).fit()
    except BaseException:
        if not fs.exists(io.join(path, "trials")):  # no trial started: leave nothing behind
            fs.rm(path, recursive=True)
        raise
    return write_results(grid, trials, experiment, raw)


def resume_tune(experiment: str, progress: bool = True,
                address: str | None = None) -> dict[str, Any]:
    """Continue the interrupted search in ``experiment``: finished trials are kept, unfinished
    and failed ones run again from their start."""
    experiment = io.absolute(experiment)
    if not io.exists(io.join(experiment, SEARCH_FILE)):
        raise AdvrecError(f"{experiment}: not an advrec tune experiment (no {SEARCH_FILE})")
    verify(experiment, _unpickled_by_none)  # before Ray unpickles any of it
    search = io.read_json(io.join(experiment, SEARCH_FILE))
    cfg = build_config(search["trials"])
    _connect(cfg, address)
    grid = _tuner(search["trials"], cfg, experiment, progress, restore=True).fit()
    return write_results(grid, cfg, experiment, search["user"])
