"""Checkpoints: tensors and plain values only, loaded with ``weights_only=True``.

Two kinds live in a run directory: ``checkpoint/model.pt``, the finished run's best model (what
`advrec evaluate` loads), and ``checkpoints/epoch-NNNNNN.pt``, the whole training state every
``train.checkpoint_every`` epochs, from which a stopped run or a failed worker group continues.

Tables sharded across workers (``model.embeddings=torchrec``) are saved beside the file, in a
``torch.distributed.checkpoint`` directory of the same name without ``.pt``, each worker writing
its own shards; the file, written last, says the checkpoint is whole. Such a directory loads into
any number of workers, resharded, or into one process's dense model (`advrec evaluate`). Its
metadata is read by an unpickler that builds checkpoint-metadata classes only, and its tensors
with ``weights_only=True``, as the files'.
"""

from __future__ import annotations

import io as _bytes_io
import pickle
import warnings
from typing import Any

import fsspec
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import Metadata

from advrec import io
from advrec.config import ModelConfig, RunConfig
from advrec.data.dataset import Dataset
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.models.base import Recommender
from advrec.models.memory import allocating, check_fits


def save_checkpoint(url: str, model: Recommender, cfg: RunConfig, epoch: int,
                    shard: tuple[int, int] = (0, 1)) -> None:
    """Write the model's weights with what is needed to rebuild it, atomically. Sharded
    (``model.embeddings=torchrec``), every worker calls it: the weights go to the directory
    (`sharded_dir`), then worker 0 writes the file."""
    state = {
        "model": model.state_dict(),
        "epoch": epoch,
        "model_config": cfg.model.model_dump(mode="json"),
        "num_users": model.num_users,
        "num_items": model.num_items,
    }
    if cfg.model.embeddings == "torchrec":
        save_sharded(sharded_dir(url), {"model": state.pop("model")})
    if shard[0] == 0:
        _write(url, state)


def sharded_dir(url: str) -> str:
    """The directory of a checkpoint file's sharded tensors: its URL without ``.pt``."""
    return url.removesuffix(".pt")


def _options(url: str) -> dict[str, Any]:
    return io.storage_options(fsspec.utils.get_protocol(url))


def save_sharded(url: str, tensors: dict[str, Any]) -> None:
    """Every worker writes its shards of ``tensors`` (nested dicts of tensors and
    ShardedTensors, nothing else) into the directory ``url``."""
    dcp.save(tensors, storage_writer=FsspecWriter(url, **_options(url)))


def load_sharded(url: str, tensors: dict[str, Any]) -> None:
    """Read the directory ``url`` into ``tensors`` (the same structure as saved, each tensor
    laid out as this worker holds it, whatever the layout it was saved with), in place."""
    reader = _MetadataReader(url, read_metadata(url), **_options(url))
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process"
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(tensors, storage_reader=reader)
    except (FileNotFoundError, dcp.api.CheckpointException) as exc:
        raise AdvrecError(f"{url}: not a whole sharded checkpoint ({type(exc).__name__})") from None


class _Refused(pickle.UnpicklingError):
    """A pickle that asks for something other than checkpoint metadata."""


class _MetadataUnpickler(pickle.Unpickler):
    """Builds the classes of a checkpoint's ``.metadata`` only, never arbitrary objects: the
    exact (module, name) pairs that torch's `dcp.save` of tensors and ShardedTensors pickles
    (recorded from the saves of every table layout; torch.distributed.checkpoint.metadata),
    and torch's dtypes. A name is looked up as given, so a dotted one (``os.system`` in an
    allowed module) is no pair here. `BytesStorageMetadata` is left out on purpose: dcp loads
    such an entry with ``torch.load(weights_only=False)``, and advrec saves tensors only."""

    CLASSES = frozenset({
        *(("torch.distributed.checkpoint.metadata", name) for name in (
            "Metadata", "StorageMeta", "MetadataIndex", "TensorStorageMetadata",
            "TensorProperties", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"), ("torch.serialization", "_get_layout"),
        *(("torch", name) for name in dir(torch) if isinstance(getattr(torch, name), torch.dtype)),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.CLASSES:
            return super().find_class(module, name)
        raise _Refused(f"it asks for {module!r}, {name!r}, which is not checkpoint metadata")


def read_metadata(url: str) -> Metadata:
    """The metadata of the sharded checkpoint directory ``url``, unpickled by
    `_MetadataUnpickler` and checked to describe tensors in files of that directory only."""
    path = io.join(url, ".metadata")
    fs, local = io.filesystem(path)
    try:
        with fs.open(local, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except FileNotFoundError:
        raise AdvrecError(f"{url}: not a whole sharded checkpoint (no .metadata)") from None
    except _Refused as exc:
        raise AdvrecError(f"{path}: refused to unpickle: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any corrupt pickle, whatever it raises
        raise AdvrecError(f"{path}: not checkpoint metadata ({type(exc).__name__})") from None
    if not (isinstance(metadata, Metadata) and isinstance(metadata.state_dict_metadata, dict)
            and isinstance(metadata.storage_data, dict)
            and all(isinstance(m, dcp.metadata.TensorStorageMetadata)
                    for m in metadata.state_dict_metadata.values())
            # the tensors' files are plain names in this directory, read untransformed
            and all(isinstance(s, _StorageInfo) and isinstance(s.relative_path, str)
                    and s.relative_path.endswith(".distcp") and "/" not in s.relative_path
                    and "\\" not in s.relative_path and not s.transform_descriptors
                    for s in metadata.storage_data.values())):
        raise AdvrecError(f"{path}: refused: not the metadata of a checkpoint of tensors")
    return metadata


class _MetadataReader(FsspecReader):
    """torch's fsspec reader, with the metadata that `read_metadata` read and checked."""

    def __init__(self, url: str, metadata: Metadata, **options: Any) -> None:
        super().__init__(url, **options)
        self._checked = metadata

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        self._checked.storage_meta = self._checked.storage_meta or dcp.metadata.StorageMeta()
        self._checked.storage_meta.load_id = self.load_id
        return self._checked


def _write(url: str, state: dict[str, Any]) -> None:
    # straight into the file: a buffer first would hold the whole state twice more in memory
    with io.atomic_file(url, "wb") as f:
        torch.save(state, f)


TRAIN_STATES = "checkpoints"


def _train_states(run: str) -> list[tuple[int, str]]:
    """The run's training-state files as (epoch, path), oldest first."""
    fs, path = io.filesystem(io.join(run, TRAIN_STATES))
    # an unfinished write is named epoch-N.pt.tmp-XXXX and does not match
    files = fs.glob(f"{path}/epoch-*.pt") if fs.exists(path) else []
    return sorted((int(f.rsplit("/", 1)[-1][len("epoch-"):-len(".pt")]), f) for f in files)


def train_state_url(run: str, epoch: int) -> str:
    """The training-state file of ``epoch`` in ``run``."""
    return io.join(run, TRAIN_STATES, f"epoch-{epoch:06d}.pt")


def save_train_state(run: str, state: dict[str, Any], keep: int,
                     sharded: dict[str, Any] | None = None, rank: int = 0) -> None:
    """Write the training state after epoch ``state["epoch"]`` into ``run``, atomically, then
    delete older states except the one of epoch ``keep`` (the best model's, as Ray Train's
    CheckpointConfig keeps the best and the latest). With ``sharded`` tensors (torchrec's
    tables), every worker calls it: they write those first, then worker ``rank`` 0 the file."""
    url = train_state_url(run, state["epoch"])
    if sharded is not None:
        save_sharded(sharded_dir(url), sharded)
    if rank != 0:
        return
    _write(url, state)
    fs, _ = io.filesystem(run)
    for old, path in _train_states(run):
        if old not in (state["epoch"], keep):
            fs.rm(path)
            if fs.exists(sharded_dir(path)):
                fs.rm(sharded_dir(path), recursive=True)


BEST = "best"


def model_url(run: str) -> str:
    """The finished run's best model, ``checkpoint/model.pt`` (`save_checkpoint`)."""
    return io.join(run, "checkpoint", "model.pt")


def best_url(run: str, epoch: int) -> str:
    """The directory of the best epoch's sharded weights, while a run with sharded tables
    trains (`advrec.train.state.EarlyStopping`)."""
    return io.join(run, BEST, f"epoch-{epoch:06d}")


def prune_best(run: str, keep: set[int]) -> None:
    """Delete the best-weight directories of ``run`` but those of the epochs ``keep``; all of
    them when ``keep`` is empty (the run has finished)."""
    fs, path = io.filesystem(io.join(run, BEST))
    if not keep:
        if fs.exists(path):
            fs.rm(path, recursive=True)
        return
    for old in fs.glob(f"{path}/epoch-*") if fs.exists(path) else []:
        if int(old.rsplit("-", 1)[-1]) not in keep:
            fs.rm(old, recursive=True)


def has_train_state(run: str) -> bool:
    """Whether ``run`` holds a saved training state (without reading it)."""
    return bool(_train_states(run))


def load_train_state(run: str) -> dict[str, Any] | None:
    """The latest training state saved in ``run``, or ``None`` when there is none."""
    states = _train_states(run)
    if not states:
        return None
    # the run as the user named it, not fsspec's file:// form: errors show the path they gave
    return load_checkpoint(train_state_url(run, states[-1][0]))


def load_checkpoint(url: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (never unpickles arbitrary objects), its
    tensors on the CPU whatever device saved them (loading copies them to the model's)."""
    fs, path = io.filesystem(url)
    try:
        with fs.open(path, "rb") as f:
            return torch.load(_bytes_io.BytesIO(f.read()), weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise AdvrecError(f"{url}: checkpoint not found") from None
    except IsADirectoryError:
        raise AdvrecError(f"{url}: is a directory, not a checkpoint") from None
    except pickle.UnpicklingError:  # torch's weights-only unpickler: a global it does not allow
        raise AdvrecError(f"{url}: refused to unpickle: not tensors and plain values only, as "
                          f"an advrec checkpoint is") from None
    except (RuntimeError, EOFError, ValueError, KeyError) as exc:  # corrupt or foreign
        raise AdvrecError(f"{url}: not an advrec checkpoint ({type(exc).__name__})") from None


def load_model(url: str, cfg: RunConfig, data: Dataset) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild the model of a checkpoint for the dataset it was trained on (which also holds the
    side features of feature models) and load its weights; returns (model, checkpoint). Tables
    saved sharded load into dense ones (one process holds them whole)."""
    ckpt = load_checkpoint(url)
    for key in ("num_users", "num_items", "model_config"):
        if key not in ckpt:
            raise AdvrecError(f"{url}: not an advrec model checkpoint (no '{key}')")
    if (ckpt["num_users"], ckpt["num_items"]) != (data.num_users, data.num_items):
        raise AdvrecError(
            f"{url}: trained on {ckpt['num_users']} users and {ckpt['num_items']} items, but "
            f"{data.url} has {data.num_users} and {data.num_items}")
    check_fits(cfg.model, data.num_users, data.num_items)
    with allocating(cfg.model):
        if "model" in ckpt:
            model = build_model(cfg, data)
            state = ckpt["model"]
        else:  # sharded tables: they load into this process's dense ones, whole
            dense = cfg.model.model_copy(update={"embeddings": "dense", "sharding": {}})
            model = build_model(cfg.model_copy(update={"model": dense}), data)
            state = model.state_dict()
            load_sharded(sharded_dir(url), {"model": state})
    load_weights(url, model, state, _changed(ckpt["model_config"], cfg.model))
    model.eval()
    return model, ckpt


def load_weights(where: str, model: nn.Module, state: dict[str, Any], changed: str = "") -> None:
    """Load the weights ``state`` into ``model`` (built from the run's config), or raise an
    error naming the first missing or unexpected key or the first tensor of another shape, and
    ``changed`` (`_changed`), instead of torch's multi-line report."""
    expected = model.state_dict()
    for key in expected:
        if key not in state:
            raise AdvrecError(f"{where}: no weights for '{key}' ({len(state)} tensors saved)"
                              f"{changed}")
    for key in state:
        if key not in expected:
            raise AdvrecError(f"{where}: weights for '{key}', which the model has not"
                              f"{changed}")
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise AdvrecError(f"{where}: '{key}' has shape {list(state[key].shape)}, but "
                              f"{list(tensor.shape)} in the model of the run's config"
                              f"{changed}")
    model.load_state_dict(state)


def _changed(saved: dict[str, Any], config: ModelConfig) -> str:
    """`` (model.dim: 8 saved, 16 in the config)``: the model keys a run's config.yaml changed
    since its weights were saved with the model config ``saved`` ('' if none)."""
    now = config.model_dump(mode="json")
    diffs = [f"model.{k}: {saved[k]!r} saved, {now.get(k)!r} in the config"
             for k in sorted(saved) if saved[k] != now.get(k)]
    return f" ({'; '.join(diffs)})" if diffs else ""
