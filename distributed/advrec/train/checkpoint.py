"""Model checkpoints: tensors and plain values only, loaded with ``weights_only=True``."""

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
    buf = _bytes_io.BytesIO()
    torch.save(state, buf)
    with io.atomic_file(url, "wb") as f:
        f.write(buf.getvalue())


def load_checkpoint(url: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (never unpickles arbitrary objects)."""
    fs, path = io.filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return torch.load(_bytes_io.BytesIO(f.read()), weights_only=True)
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
