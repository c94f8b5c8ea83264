"""Run tracking (``train.loggers``): each epoch's record (losses, valid, robust and target
metrics, seconds) also goes to TensorBoard or MLflow, through their own clients.

- ``tensorboard``: tensorboardX's ``SummaryWriter`` (the one Ray Tune's logger uses; it ships
  with ``ray[train]``), scalars at step = epoch, event files in the run's ``tensorboard/``. A
  run in object storage writes them to a local folder and copies them there after every epoch.
- ``mlflow``: one MLflow run per training process, named after the run directory, on the
  tracking server of ``MLFLOW_TRACKING_URI`` (MLflow's own default otherwise), with the resolved
  config as parameters. A resumed run starts a new MLflow run at its next epoch.

Neither takes ``@`` in a name, so both name a metric as ``history.json`` does with ``_at_`` for
it: ``valid/ndcg@10`` is ``valid/ndcg_at_10``.

Only rank 0 logs (every worker's record is the same).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

from advrec import io
from advrec.config import RunConfig
from advrec.errors import AdvrecError

TENSORBOARD_DIR = "tensorboard"


class EpochLogger(Protocol):
    def log(self, record: dict[str, Any], epoch: int) -> None:
        """Log one epoch's numbers (``record``: a `history.json` entry) at step ``epoch``."""

    def close(self) -> None:
        """Flush and let go."""


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The record's numeric entries (flags such as ``stopped`` and ``adversarial`` left out),
    named for the loggers (``@`` as ``_at_``)."""
    return {k.replace("@", "_at_"): float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    """Scalars in TensorBoard event files under ``<run>/tensorboard``."""

    def __init__(self, output: str) -> None:
        from tensorboardX import SummaryWriter

        self.target = io.join(output, TENSORBOARD_DIR)
        # event files are appended to: an object store has no append, so write them here
        self.local = None if io.is_local(output) else tempfile.mkdtemp(prefix="advrec-tb-")
        self.writer = SummaryWriter(self.local or self.target)

    def log(self, record: dict[str, Any], epoch: int) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        if self.local:
            fs, path = io.filesystem(self.target)
            fs.put(self.local + "/", path, recursive=True)

    def close(self) -> None:
        self.writer.close()


class MLflow:
    """An MLflow run of the epochs, on ``MLFLOW_TRACKING_URI``."""

    def __init__(self, output: str, cfg: RunConfig) -> None:
        try:
            import mlflow
        except ImportError:
            raise AdvrecError("train.loggers: mlflow is not installed; pip install "
                              "'advrec[mlflow]' (or mlflow)") from None
        self.mlflow = mlflow
        flat = _flatten(cfg.model_dump(mode="json", by_alias=True))
        with self._errors():
            mlflow.start_run(run_name=output.rstrip("/").rsplit("/", 1)[-1])
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})  # MLflow's limit

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """An unreachable or refused tracking server (or store) as one line naming it."""
        try:
            yield
        except (self.mlflow.exceptions.MlflowException, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AdvrecError(f"train.loggers: mlflow at {self.mlflow.get_tracking_uri()}: "
                              f"{first}") from None

    def log(self, record: dict[str, Any], epoch: int) -> None:
        with self._errors():
            self.mlflow.log_metrics(numbers(record), step=epoch)

    def close(self) -> None:
        with self._errors():
            self.mlflow.end_run()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"adv": {"eps": 0.5}}`` -> ``{"adv.eps": 0.5}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def make_loggers(cfg: RunConfig, output: str) -> list[EpochLogger]:
    """The loggers ``train.loggers`` names, for the run at ``output``."""
    made: list[EpochLogger] = []
    for name in cfg.train.loggers:
        made.append(TensorBoard(output) if name == "tensorboard" else MLflow(output, cfg))
    return made
