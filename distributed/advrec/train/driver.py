"""The driver side of training: resolve the data, lay out the run directory, launch the loop.

The loop itself (`advrec.train.loop`) is the same function Ray Train runs on each worker; with
``scaling.num_workers=0`` Ray Train's local mode runs it in this process, with no cluster to
start. With N >= 1 workers the driver connects to the Ray cluster at ``address`` (or
``RAY_ADDRESS``), or starts a local Ray instance when there is none.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import ray
from pyarrow.fs import FSSpecHandler, PyFileSystem
from ray.train import FailureConfig, LoggingConfig, WorkerGroupError
from ray.train import RunConfig as RayRunConfig
from ray.train import ScalingConfig as RayScalingConfig
from ray.train.torch import TorchTrainer

from advrec import __version__, io
from advrec.config import RunConfig, ScalingConfig, dump_config, load_config
from advrec.data.source import resolve_dataset
from advrec.errors import AdvrecError
from advrec.train.checkpoint import has_train_state
from advrec.train.loop import train_loop_per_worker

# Ray Train's INFO lines in local mode; on workers `launch` sets its LoggingConfig to WARNING,
# which quiets the controller's set-up lines (the per-report lines: `loop.quiet_reports`).
logging.getLogger("ray.train").setLevel(logging.WARNING)


def connect(address: str | None, num_cpus: float) -> None:
    """Join the Ray cluster at ``address`` (default ``RAY_ADDRESS``), or start a local one with
    at least ``num_cpus`` logical CPUs, unless this process is already connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    # a local instance: declare enough logical CPUs for the workers even on a small machine
    # (they share the cores; Ray only counts reservations)
    cpus = max(os.cpu_count() or 1, int(-(-num_cpus // 1)))
    ray.init(num_cpus=cpus, include_dashboard=False)


def launch(fn: Callable[[dict[str, Any]], Any], config: dict[str, Any], scaling: ScalingConfig,
           address: str | None = None, storage: str | None = None) -> Any:
    """Run ``fn(config)`` on ``scaling.num_workers`` Ray Train workers (in this process for 0)
    and return rank 0's return value.

    ``storage``: the run directory (a path or URL), which Ray Train's RunConfig gets as its
    storage (``storage_path/name``), so its experiment state lives beside advrec's checkpoints.
    A failed worker group is restarted ``scaling.max_failures`` times; ``fn`` continues from the
    latest checkpoint there.
    """
    workers = scaling.num_workers
    if workers:
        connect(address, workers * scaling.cpus_per_worker)
    storage_options: dict[str, Any] = {}
    if storage is not None:
        fs, path = io.filesystem(storage)
        parent, _, name = path.rstrip("/").rpartition("/")
        storage_options = {"storage_path": parent or "/", "name": name,
                           "storage_filesystem": PyFileSystem(FSSpecHandler(fs))}
    trainer = TorchTrainer(
        fn, train_loop_config=config,
        run_config=RayRunConfig(logging_config=LoggingConfig(log_level="WARNING"),
                                failure_config=FailureConfig(max_failures=scaling.max_failures),
                                **storage_options),
        scaling_config=RayScalingConfig(
            num_workers=workers, use_gpu=False,
            resources_per_worker={"CPU": scaling.cpus_per_worker} if workers else None))
    try:
        return trainer.fit().return_value
    except WorkerGroupError as exc:
        # bad input found on a worker (a dataset without labels, say): the one-line error it
        # is, not a trace from every worker. Ray wraps user errors to carry their trace text.
        for failure in exc.worker_failures.values():
            error = getattr(failure, "_base_exc", failure)
            if isinstance(error, AdvrecError):
                raise AdvrecError(str(error)) from None
        raise


def run_training(cfg: RunConfig, output: str, progress: bool = True,
                 address: str | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run directory ``output``; returns the final metrics.

    ``address``: the Ray cluster of a multi-worker run (``scaling.num_workers >= 1``); default
    ``RAY_ADDRESS``, else a local Ray instance. Its workers write the run directory, so on a
    cluster ``output`` must be storage they all reach (``s3://...``).

    The run directory gets ``config.yaml`` (resolved), ``run.json`` (the prepared dataset used),
    ``checkpoint/model.pt``, ``history.json`` and ``metrics.json``, and the training state
    every ``train.checkpoint_every`` epochs under ``checkpoints/``. A run that fails before its
    first checkpoint removes the directory it created, so no half-written run is left behind;
    a later failure keeps it for `resume_training`. A finished run in ``output`` is replaced.
    """
    output = io.absolute(output)  # Ray workers do not share the driver's working directory
    fs, path = io.filesystem(output)  # an unreachable output fails now, before any work
    dataset = resolve_dataset(cfg.data)
    if fs.exists(io.join(path, "run.json")):
        if not fs.exists(io.join(path, "metrics.json")) and has_train_state(output):
            raise AdvrecError(f"{output}: holds an unfinished run; continue it with `advrec "
                              f"train --resume {output}`, or delete it")
        fs.rm(path, recursive=True)  # a finished run is replaced, leaving none of its files
    created = not fs.exists(path)
    try:
        with io.atomic_file(io.join(output, "config.yaml")) as f:
            f.write(dump_config(cfg))
        io.dump_json(io.join(output, "run.json"), {"dataset": dataset, "advrec": __version__})
        return _train(cfg, dataset, output, progress, address)
    except BaseException:
        if created and fs.exists(path) and not has_train_state(output):
            fs.rm(path, recursive=True)
        raise


def resume_training(run: str, progress: bool = True, address: str | None = None) -> dict[str, Any]:
    """Continue the stopped run in ``run`` from its latest checkpoint; returns the final
    metrics. The run continues exactly as if it had never stopped (same config and workers)."""
    run = io.absolute(run)
    cfg, dataset = read_run(run)
    if io.exists(io.join(run, "metrics.json")):
        raise AdvrecError(f"{run}: this run has finished; there is nothing to resume")
    return _train(cfg, dataset, run, progress, address)


def _train(cfg: RunConfig, dataset: str, output: str, progress: bool,
           address: str | None) -> dict[str, Any]:
    return launch(train_loop_per_worker,
                  {"run": cfg.model_dump(mode="json", by_alias=True), "dataset": dataset,
                   "output": output, "progress": progress},
                  cfg.scaling, address, storage=output)


def read_run(run: str) -> tuple[RunConfig, str]:
    """The resolved config and prepared-dataset URL of a run directory."""
    if not io.exists(io.join(run, "run.json")):
        raise AdvrecError(f"{run}: not a run directory (no run.json); train one with `advrec train`")
    return load_config(io.join(run, "config.yaml")), io.read_json(io.join(run, "run.json"))["dataset"]
