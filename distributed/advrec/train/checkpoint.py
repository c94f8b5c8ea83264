"""Checkpoints: tensors and plain values only, loaded with ``weights_only=True``.

Two kinds live in a run directory: ``checkpoint/model.pt``, the finished run's best model (what
`advrec evaluate` loads), and ``checkpoints/epoch-NNNNNN.pt``, the whole training state every
``train.checkpoint_every`` epochs, from which a stopped run or a failed worker group continues.
"""

from __future__ import annotations

import io as _bytes_io
import pickle
from typing import Any

import torch

from advrec import io
from advrec.config import RunConfig
from advrec.data.dataset import Dataset
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.models.base import Recommender


def save_checkpoint(url: str, model: Recommender, cfg: RunConfig, epoch: int) -> None:
    """Write the model's weights with what is needed to rebuild it, atomically."""
    state = {
        "model": model.state_dict(),
        "epoch": epoch,
        "model_config": cfg.model.model_dump(mode="json"),
        "num_users": model.num_users,
        "num_items": model.num_items,
    }
    _write(url, state)


def _write(url: str, state: dict[str, Any]) -> None:
    buf = _bytes_io.BytesIO()
    torch.save(state, buf)
    with io.atomic_file(url, "wb") as f:
        f.write(buf.getvalue())


TRAIN_STATES = "checkpoints"


def _train_states(run: str) -> list[tuple[int, str]]:
    """The run's training-state files as (epoch, path), oldest first."""
    fs, path = io.filesystem(io.join(run, TRAIN_STATES))
    # an unfinished write is named epoch-N.pt.tmp-XXXX and does not match
    files = fs.glob(f"{path}/epoch-*.pt") if fs.exists(path) else []
    return sorted((int(f.rsplit("/", 1)[-1][len("epoch-"):-len(".pt")]), f) for f in files)


def save_train_state(run: str, state: dict[str, Any], keep: int) -> None:
    """Write the training state after epoch ``state["epoch"]`` into ``run``, atomically, then
    delete older states except the one of epoch ``keep`` (the best model's, as Ray Train's
    CheckpointConfig keeps the best and the latest)."""
    epoch = state["epoch"]
    _write(io.join(run, TRAIN_STATES, f"epoch-{epoch:06d}.pt"), state)
    fs, _ = io.filesystem(run)
    for old, path in _train_states(run):
        if old not in (epoch, keep):
            fs.rm(path)


def has_train_state(run: str) -> bool:
    """Whether ``run`` holds a saved training state (without reading it)."""
    return bool(_train_states(run))


def load_train_state(run: str) -> dict[str, Any] | None:
    """The latest training state saved in ``run``, or ``None`` when there is none."""
    states = _train_states(run)
    if not states:
        return None
    fs, _ = io.filesystem(run)
    return load_checkpoint(fs.unstrip_protocol(states[-1][1]))


def load_checkpoint(url: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (never unpickles arbitrary objects), its
    tensors on the CPU whatever device saved them (loading copies them to the model's)."""
    fs, path = io.filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return torch.load(_bytes_io.BytesIO(f.read()), weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise AdvrecError(f"{url}: checkpoint not found") from None
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:  # corrupt or foreign
        raise AdvrecError(f"{url}: not an advrec checkpoint ({type(exc).__name__})") from None


def load_model(url: str, cfg: RunConfig, data: Dataset) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the model of a checkpoint for the dataset it was trained on (which also holds the
    side features of feature models) and load its weights; returns (model, checkpoint)."""
    ckpt = load_checkpoint(url)
    if (ckpt["num_users"], ckpt["num_items"]) != (data.num_users, data.num_items):
        raise AdvrecError(
            f"{url}: trained on {ckpt['num_users']} users and {ckpt['num_items']} items, but "
            f"{data.url} has {data.num_users} and {data.num_items}")
    model = build_model(cfg, data)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
