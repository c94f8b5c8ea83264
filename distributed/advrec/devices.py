"""Where a worker computes: its GPU with ``scaling.use_gpu``, else the CPU.

Data stays on the CPU until a batch is scored: tasks slice and sample on the CPU (with the
epoch's CPU generator, so a GPU run draws what a CPU run draws), and `to_device` moves each batch
just before the model sees it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from advrec.errors import AdvrecError

CPU = torch.device("cpu")


def train_device(use_gpu: bool, ray_worker: bool) -> torch.device:
    """This worker's device: with ``use_gpu``, the GPU Ray Train gave a ``ray_worker``, or the
    first CUDA device in this process; else the CPU."""
    if not use_gpu:
        return CPU
    if not torch.cuda.is_available():
        raise AdvrecError("scaling.use_gpu: no CUDA device here (torch.cuda.is_available() is "
                          "False); set scaling.use_gpu=false or run where a GPU is")
    if ray_worker:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cuda", torch.cuda.current_device())


def placement(device: torch.device) -> dict[str, str]:
    """Where this worker trained, for ``metrics.json``: its ``device`` (a GPU with its name)
    and the process group's ``backend`` (gloo, nccl; "none" for a process training alone)."""
    name = (f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
            else str(device))
    backend = str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else "none"
    return {"device": name, "backend": backend}


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    first = next(model.parameters(), None)
    return CPU if first is None else first.device


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """``batch`` with every tensor on ``device`` (the same dict's tensors when already there)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
