"""The driver side of training: resolve the data, lay out the run directory, launch the loop.

The loop itself (`advrec.train.loop`) is the same function Ray Train runs on each worker; with
``scaling.num_workers=0`` Ray Train's local mode runs it in this process, with no cluster to
start. With N >= 1 workers the driver connects to the Ray cluster at ``address`` (or
``RAY_ADDRESS``), or starts a local Ray instance when there is none.

With ``data.stream`` the training rows are a Ray Data stream of the prepared train split that
Ray Train splits across the workers; the driver only plans it (reads file metadata), so it never
holds the log.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import ray
import ray.data
from pyarrow.fs import FSSpecHandler, PyFileSystem
from ray.train import DataConfig, FailureConfig, LoggingConfig, WorkerGroupError
from ray.train import RunConfig as RayRunConfig
from ray.train import ScalingConfig as RayScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from advrec import __version__, io
from advrec.config import RunConfig, ScalingConfig, dump_config, load_config
from advrec.data.source import resolve_dataset
from advrec.errors import AdvrecError, Interrupted
from advrec.metrics.target import TargetItems, resolve_targets
from advrec.ports import free_ports
from advrec.train.checkpoint import has_train_state
from advrec.train.loop import train_loop_per_worker
from advrec.train.tasks import LABELS, row_columns
from advrec.train.warm import check_init

if TYPE_CHECKING:
    from advrec.train.pool import WorkerGroup

# Ray Train's INFO lines in local mode; on workers `launch` sets its LoggingConfig to WARNING,
# which quiets the controller's set-up lines (the per-report lines: `loop.quiet_ray_train`).
logging.getLogger("ray.train").setLevel(logging.WARNING)
# Ray Data's lines at every epoch's read (the stream's progress bars are off: one warning says so)
logging.getLogger("ray.data").setLevel(logging.WARNING)
logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


QUIET_HOOK = "advrec.ray_quiet.quiet"
"""What every process of a local Ray instance runs first (`advrec.ray_quiet`); a cluster's
processes may lack advrec at start, so only a local instance's get it."""

DATA_CPUS = 2
"""Logical CPUs a local Ray instance declares beyond the workers' for Ray Data's read tasks,
which would otherwise wait forever for CPUs the train workers hold (ARCHITECTURE.md, Ray notes)."""


def run_cpus(scaling: ScalingConfig, streaming: bool) -> float:
    """The logical CPUs one run takes: its workers', and Ray Data's beside them for a stream."""
    return scaling.num_workers * scaling.cpus_per_worker + (DATA_CPUS if streaming else 0)


_local_cpus: int | None = None
"""The logical CPUs of the local Ray instance that `connect` started in this process, if any."""


def connect(address: str | None, num_cpus: float) -> None:
    """Join the Ray cluster at ``address`` (default ``RAY_ADDRESS``), or start a local one with
    at least ``num_cpus`` logical CPUs, unless this process is already connected. A local
    instance started here for an earlier, smaller run is restarted bigger: a run that needs more
    CPUs than Ray has waits forever."""
    global _local_cpus
    if ray.is_initialized():
        if _local_cpus is None or _local_cpus >= num_cpus:
            return
        ray.shutdown()
    # Ray Data logs every epoch's read at INFO from the actor that splits the stream
    env = {"RAY_DATA_LOG_LEVEL": os.environ.get("RAY_DATA_LOG_LEVEL", "WARNING")}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": env})
        return
    # a local instance: declare enough logical CPUs for the workers even on a small machine
    # (they share the cores; Ray only counts reservations)
    cpus = max(os.cpu_count() or 1, int(-(-num_cpus // 1)))
    # the dashboard serves Ray's State API, without which Ray Train's placement-group cleaner
    # cannot tell that a run's controller has gone: the CPUs of every Tune trial stayed reserved.
    # The cleaner finds the State API through RAY_API_SERVER_ADDRESS, else by looking for "the"
    # local Ray instance, which fails when another one runs on the machine: so name it
    port = free_ports(1)[0]
    env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    ray.init(num_cpus=cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, runtime_env={"env_vars": env,
                                               "worker_process_setup_hook": QUIET_HOOK})
    _local_cpus = cpus


def train_stream(dataset: str, columns: tuple[str, ...]) -> Callable[[], ray.data.Dataset]:
    """What makes the stream of ``columns`` of the prepared ``dataset``'s train split, read
    through the same filesystem as every other file, in order (so Ray Train's split gives each
    worker the same rows every epoch, and a restarted run repeats itself)."""
    def read() -> ray.data.Dataset:
        fs, path = io.filesystem(dataset)
        context = ray.data.DataContext.get_current()
        saved = context.use_datasource_v2, context.enable_progress_bars
        # Ray Data's newer Parquet reader starts actors to read footers at every execution
        # (every epoch): 6 s each on a 2-core machine, against 0.5 s to the first batch here
        context.use_datasource_v2 = False
        context.enable_progress_bars = False  # the training bar says enough
        try:
            stream = ray.data.read_parquet(io.join(path, "train.parquet"),
                                           filesystem=PyFileSystem(FSSpecHandler(fs)))
        finally:
            context.use_datasource_v2, context.enable_progress_bars = saved
        stream = stream.select_columns(list(columns))
        stream.context.execution_options.preserve_order = True
        stream.context.enable_progress_bars = False
        stream.context.print_on_execution_start = False
        return stream
    return read


def launch(fn: Callable[[dict[str, Any]], Any], config: dict[str, Any], scaling: ScalingConfig,
           address: str | None = None, storage: str | None = None,
           datasets: dict[str, Callable[[], ray.data.Dataset]] | None = None,
           tune: bool = False) -> Any:
    """Run ``fn(config)`` on ``scaling.num_workers`` Ray Train workers (in this process for 0)
    and return rank 0's return value.

    ``datasets``: Ray Data streams by name, split equally across the workers (in order), which
    take theirs with ``ray.train.get_dataset_shard``; they need a Ray instance even in-process.

    ``storage``: the run directory (a path or URL), which Ray Train's RunConfig gets as its
    storage (``storage_path/name``), so its experiment state lives beside advrec's checkpoints.
    A failed worker group is restarted ``scaling.max_failures`` times; ``fn`` continues from the
    latest checkpoint there. ``tune``: this runs inside a Ray Tune trial, to which the workers'
    reports go (by Tune's callback; Ray Train's local mode has none, so a trial needs workers).
    """
    workers = scaling.num_workers
    main_thread = threading.current_thread() is threading.main_thread()
    if workers or datasets:
        sigterm = signal.getsignal(signal.SIGTERM)
        connect(address, run_cpus(scaling, streaming=bool(datasets)))
        if callable(sigterm) and main_thread:
            # ray.init puts its own SIGTERM handler in place, which exits at once (status 1);
            # the CLI's raises, so the run is cleaned up (and Ray stopped, below)
            signal.signal(signal.SIGTERM, sigterm)
    storage_options: dict[str, Any] = {}
    if storage is not None:
        fs, path = io.filesystem(storage)
        parent, _, name = path.rstrip("/").rpartition("/")
        storage_options = {"storage_path": parent or "/", "name": name,
                           "storage_filesystem": PyFileSystem(FSSpecHandler(fs))}
    ingest = ray.data.ExecutionOptions(preserve_order=True)
    trainer = TorchTrainer(
        fn, train_loop_config=config, datasets=datasets,
        dataset_config=DataConfig(execution_options=ingest),
        run_config=RayRunConfig(logging_config=LoggingConfig(log_level="WARNING"),
                                callbacks=[TuneReportCallback()] if tune and workers else None,
                                failure_config=FailureConfig(max_failures=scaling.max_failures),
                                **storage_options),
        scaling_config=RayScalingConfig(
            num_workers=workers, use_gpu=scaling.use_gpu,
            # one GPU each with use_gpu, which also makes Ray Train's process group NCCL
            resources_per_worker={"CPU": scaling.cpus_per_worker,
                                  **({"GPU": 1} if scaling.use_gpu else {})}
            if workers else None))
    handler = signal.getsignal(signal.SIGINT)
    try:
        return trainer.fit().return_value
    except SystemExit:
        # with workers, fit() puts Ray Train's own SIGINT handler in place (on the main thread),
        # which aborts the worker group and calls sys.exit(0), reaching here as SystemExit(1)
        # (Ray 2.60); no other code on this path exits: an interrupt it is
        raise Interrupted(signal.SIGINT) from None
    except KeyboardInterrupt:
        # SIGTERM (the CLI's handler; ray.get re-raises it as a plain KeyboardInterrupt): the
        # workers go on until Ray stops, and must not write into the run directory the caller
        # is about to clean up
        if workers or datasets:
            ray.shutdown()
        raise
    except WorkerGroupError as exc:
        # bad input found on a worker (a dataset without labels, say): the one-line error it
        # is, not a trace from every worker. Ray wraps user errors to carry their trace text.
        for failure in exc.worker_failures.values():
            error = getattr(failure, "_base_exc", failure)
            if isinstance(error, AdvrecError):
                raise AdvrecError(str(error)) from None
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, handler)  # Ray leaves its own, for a run now over


RUN = io.Marker("run.json", "advrec", "an advrec run")
"""What marks a directory as a run `run_training` wrote, which a new run may replace."""


def run_training(cfg: RunConfig, output: str, progress: bool = True,
                 address: str | None = None, tune: bool = False,
                 group: WorkerGroup | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run directory ``output``; returns the final metrics.

    ``address``: the Ray cluster of a multi-worker run (``scaling.num_workers >= 1``); default
    ``RAY_ADDRESS``, else a local Ray instance. Its workers write the run directory, so on a
    cluster ``output`` must be storage they all reach (``s3://...``). ``group``: an open
    `WorkerGroup` of ``scaling.num_workers`` workers that trains it, instead of a group started
    for this run (not with ``data.stream``, whose Ray Data stream a group is started with).

    The run directory gets ``config.yaml`` (resolved), ``run.json`` (the prepared dataset used),
    ``checkpoint/model.pt``, ``history.json`` and ``metrics.json``, and the training state
    every ``train.checkpoint_every`` epochs under ``checkpoints/``. A run that fails before its
    first checkpoint removes what it wrote, so no half-written run is left behind; a later
    failure keeps it for `resume_training`.

    Its target items (``eval.targets``, else the dataset's ``targets.json``) are read and looked
    up before anything is written; a local ``eval.targets`` is kept absolute in ``config.yaml``.

    ``output`` may be new, an empty directory, or a run written here before that is not
    unfinished (`io.check_output`: never anything else). A new run replaces an old one only
    once it has finished: it is trained beside it, in ``OUTPUT.tmp-XXXXXXXX`` (its ``run.json``
    says which run it ``replaces``), then swapped in (`io.replace_tree`). One that fails keeps
    the old run, and, when it has a checkpoint, is kept too: resuming it finishes the
    replacement.
    """
    output = io.absolute(output)  # Ray workers do not share the driver's working directory
    io.check_output(output, RUN)  # an unreachable or a foreign output fails now, before any work
    fs, path = io.filesystem(output)
    dataset = resolve_dataset(cfg.data)
    targets = resolve_targets(cfg.eval, dataset)  # a bad or unknown target fails here
    warm = None
    if cfg.train.init_from:  # a run that cannot start this one fails here
        cfg, warm = check_init(cfg, dataset)
        if cfg.train.init_from == output:
            raise AdvrecError(f"train.init_from={cfg.train.init_from}: the --output run, which "
                              "this run would replace; write the new run elsewhere")
    if cfg.eval.targets:  # Ray workers, and a resumed run, do not share this working directory
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(
            update={"targets": io.absolute(cfg.eval.targets)})})
    replaces = None
    if fs.exists(io.join(path, "run.json")):
        if not fs.exists(io.join(path, "metrics.json")) and has_train_state(output):
            raise AdvrecError(f"{output}: holds an unfinished run; continue it with `advrec "
                              f"train --resume {output}`, or delete it")
        replaces, output = output, io.temporary(output)
        path = io.filesystem(output)[1]
    created = not fs.exists(path)
    try:
        with io.atomic_file(io.join(output, "config.yaml")) as f:
            f.write(dump_config(cfg))
        io.dump_json(io.join(output, "run.json"), {
            "dataset": dataset, "advrec": __version__,
            **({"replaces": replaces} if replaces else {}),
            **({"init_from": {"run": cfg.train.init_from, **warm}} if warm else {})})
        metrics = _train(cfg, dataset, output, progress, address, tune, targets, group)
    except BaseException:
        if has_train_state(output):
            if replaces:
                print(f"advrec: {replaces} is unchanged; its replacement stopped after a "
                      f"checkpoint: `advrec train --resume {output}` finishes it and replaces "
                      f"{replaces}", file=sys.stderr)
        elif not created:  # an empty directory the user made: empty it again
            for child in fs.ls(path, detail=False):
                fs.rm(child, recursive=True)
        elif fs.exists(path):
            fs.rm(path, recursive=True)
        raise
    if replaces:
        io.replace_tree(replaces, output, RUN)
    return metrics


def resume_training(run: str, progress: bool = True, address: str | None = None,
                    tune: bool = False) -> dict[str, Any]:
    """Continue the stopped run in ``run`` from its latest checkpoint; returns the final
    metrics. The run continues exactly as if it had never stopped (same config and workers).
    A stopped replacement (`run_training`) replaces its run once it has finished."""
    run = io.absolute(run)
    cfg, dataset = read_run(run)
    if io.exists(io.join(run, "metrics.json")):
        raise AdvrecError(f"{run}: this run has finished; there is nothing to resume")
    metrics = _train(cfg, dataset, run, progress, address, tune,
                     resolve_targets(cfg.eval, dataset))
    replaces = io.read_json(io.join(run, "run.json")).get("replaces")
    if replaces:
        io.replace_tree(replaces, run, RUN)
    return metrics


def _train(cfg: RunConfig, dataset: str, output: str, progress: bool,
           address: str | None, tune: bool, targets: TargetItems | None,
           group: WorkerGroup | None = None) -> dict[str, Any]:
    """Launch the loop, or hand it to ``group``; ``tune``: this is a trial of `advrec tune`,
    whose epochs go to Tune; ``targets``: the target items every evaluation measures."""
    config = {"run": cfg.model_dump(mode="json", by_alias=True), "dataset": dataset,
              "output": output, "progress": progress,
              "targets": asdict(targets) if targets else None}
    if group is not None:
        if cfg.data.stream or cfg.scaling.num_workers != group.scaling.num_workers:
            raise ValueError("a worker group trains runs of its own number of workers, "
                             "without data.stream")
        return group.run(config)
    datasets = ({"train": train_stream(dataset, row_columns(LABELS[cfg.kind]))}
                if cfg.data.stream else None)
    return launch(train_loop_per_worker, config, cfg.scaling, address, storage=output,
                  datasets=datasets, tune=tune)


def read_run(run: str) -> tuple[RunConfig, str]:
    """The resolved config and prepared-dataset URL of a run directory."""
    if not io.exists(io.join(run, "run.json")):
        raise AdvrecError(f"{run}: not a run directory (no run.json); train one with `advrec train`")
    info = io.read_json(io.join(run, "run.json"))
    dataset = info.get("dataset") if isinstance(info, dict) else None
    if not isinstance(dataset, str) or not dataset:
        raise AdvrecError(f"{io.join(run, 'run.json')}: names no dataset (its prepared "
                          "dataset's path or URL, as `advrec train` writes it)")
    config = io.join(run, "config.yaml")
    try:
        return load_config(config), dataset
    except AdvrecError as exc:  # the run's own config, not the user's: say whose it is
        said = str(exc)
        raise AdvrecError(said if said.startswith(config) else f"{config}: {said}") from None
