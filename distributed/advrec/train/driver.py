"""The driver side of training: resolve the data, lay out the run directory, launch the loop.

The loop itself (`advrec.train.loop`) is the same function Ray Train runs on each worker; with
``num_workers=0`` Ray Train's local mode runs it in this process, with no cluster to start.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from advrec import __version__, io
from advrec.config import RunConfig, dump_config, load_config
from advrec.data.source import resolve_dataset
from advrec.errors import AdvrecError
from advrec.train.loop import train_loop_per_worker

# Ray Train logs every report at INFO in local mode; the progress bar already shows them.
logging.getLogger("ray.train").setLevel(logging.WARNING)


def run_training(cfg: RunConfig, output: str, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` into the run directory ``output``; returns the final metrics.

    The run directory gets ``config.yaml`` (resolved), ``run.json`` (the prepared dataset used),
    ``checkpoint/model.pt``, ``history.json`` and ``metrics.json``. A run that fails before
    finishing removes the directory it created, so no half-written run is left behind.
    """
    dataset = resolve_dataset(cfg.data)
    fs, path = io.filesystem(output)
    created = not fs.exists(path)
    try:
        with io.atomic_file(io.join(output, "config.yaml")) as f:
            f.write(dump_config(cfg))
        io.dump_json(io.join(output, "run.json"), {"dataset": dataset, "advrec": __version__})
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"run": cfg.model_dump(mode="json", by_alias=True),
                               "dataset": dataset, "output": output, "progress": progress},
            scaling_config=ScalingConfig(num_workers=0),
        )
        return trainer.fit().return_value
    except BaseException:
        if created and fs.exists(path):
            fs.rm(path, recursive=True)
        raise


def read_run(run: str) -> tuple[RunConfig, str]:
    """The resolved config and prepared-dataset URL of a run directory."""
    if not io.exists(io.join(run, "run.json")):
        raise AdvrecError(f"{run}: not a run directory (no run.json); train one with `advrec train`")
    return load_config(io.join(run, "config.yaml")), io.read_json(io.join(run, "run.json"))["dataset"]
