"""The embedding tables' size before they are allocated, and allocation failures as one line.

A model whose tables cannot fit (``model.dim=1000000000``) is refused before any allocation,
with the size it asked for; an allocation that fails anyway (other processes hold the memory, a
memory limit) becomes the same kind of one-line error instead of the allocator's traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from advrec.config import ModelConfig
from advrec.errors import AdvrecError

FLOAT_BYTES = 4  # tables are float32

OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 0, "adagrad": 1}
"""Copies of each parameter an optimizer keeps as its state (Adam's two moments, Adagrad's sum
of squares; SGD without momentum none)."""

GIB = 2**30


def id_table_bytes(model: ModelConfig, users: int, items: int) -> int:
    """A lower bound of the model's tables: float32 rows of ``model.dim`` for its user and item
    ids (NeuMF has two tables a side, SASRec an item table only); side-feature tables, positions
    and layers come on top, so a model refused on this bound can never fit."""
    if model.name == "sasrec":
        rows = items + 1  # and its padding row
    else:
        rows = (users + items) * (2 if model.name == "neumf" else 1)
    return rows * model.dim * FLOAT_BYTES


def physical_memory() -> int | None:
    """This machine's memory in bytes, or ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def check_fits(model: ModelConfig, users: int, items: int, optimizer: str | None = None,
               share: int = 1) -> None:
    """Refuse a model whose id tables (`id_table_bytes`, a ``share``-th of them where tables
    are sharded across that many workers), with ``optimizer``'s state beside them when it
    trains, need more than this machine's memory: an error naming ``model.dim`` and the GiB."""
    memory = physical_memory()
    copies = 1 + (OPTIMIZER_SLOTS[optimizer] if optimizer else 0)
    need = id_table_bytes(model, users, items) * copies // share
    if memory is not None and need > memory:
        state = f" and their {optimizer} state" if optimizer and copies > 1 else ""
        held = f" (1/{share} per worker)" if share > 1 else ""
        raise AdvrecError(f"model.dim={model.dim}: the embedding tables{state} need at least "
                          f"{need / GIB:.1f} GiB{held}, more than this machine's "
                          f"{memory / GIB:.1f} GiB of memory")


@contextlib.contextmanager
def allocating(model: ModelConfig) -> Iterator[None]:
    """Turn a failed allocation in the block (the CPU allocator's RuntimeError, CUDA's
    OutOfMemoryError) into a one-line error naming ``model.dim``."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise AdvrecError(f"out of GPU memory with model.dim={model.dim} "
                          f"({str(exc).splitlines()[0][:200]})") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc):
            raise
        raise AdvrecError(f"out of memory with model.dim={model.dim} "
                          f"({str(exc).splitlines()[0][:200]})") from None
