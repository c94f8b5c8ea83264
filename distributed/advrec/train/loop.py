"""The per-worker training loop: the one and only implementation of training.

Ray Train runs `train_loop_per_worker` on each worker (``num_workers=0`` runs it in this process).
Read it top to bottom: set-up, then for each epoch take the task's batches (shuffled, with
sampled negatives: `advrec.train.tasks`), one optimizer step per batch on ``L_clean + λ·L_adv``,
evaluate, keep the best weights, stop early; at the end restore the best weights, evaluate valid
and test, and write the run directory.

With N workers each trains on its own shard of every epoch, with a batch of
``train.batch_size / N`` rows, so the global batch and the learning rate mean what they mean on
one worker. The whole objective (clean loss, attack, adversarial loss) is one forward of the
DDP-wrapped `AdversarialObjective`, so its backward is the step's only gradient all-reduce; the
attack's inner steps differentiate with respect to δ only and never reach DDP. Evaluation is
sharded and combined (`advrec.shards`), so every worker gets the same metrics and takes the same
early-stopping decision; only rank 0 writes the run directory.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import ray.train
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from advrec import io
from advrec.adversarial import AdversarialObjective, Attack
from advrec.config import RunConfig, TrainConfig
from advrec.data.dataset import load_dataset
from advrec.devices import CPU, to_device, train_device
from advrec.errors import AdvrecError
from advrec.metrics.robustness import attack_batches, attacked_metrics, robust_attack
from advrec.models import build_model
from advrec.models.base import Recommender
from advrec.models.memory import allocating, check_fits
from advrec.shards import gather_objects
from advrec.train.allocator import tune_malloc
from advrec.train.checkpoint import (
    best_url,
    load_sharded,
    load_train_state,
    load_weights,
    prune_best,
    save_checkpoint,
    save_sharded,
    save_train_state,
    sharded_dir,
    train_state_url,
)
from advrec.train.tasks import Task, make_loss, make_task

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


# Optimizers that apply sparse gradients (to the rows a step touched): Adam's sparse variant
# keeps its moments per row and updates a row only when it is looked up, as "lazy Adam" does
SPARSE_OPTIMIZERS = {
    "adam": torch.optim.SparseAdam,
    "adamw": torch.optim.SparseAdam,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


class SplitOptimizer:
    """Several optimizers stepped as one (the sparse tables' and the dense rest's)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self.parts = parts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(saved)


Optimizer = torch.optim.Optimizer | SplitOptimizer


def make_optimizer(model: Recommender, cfg: TrainConfig, fused_tables: bool = False) -> Optimizer:
    """The configured optimizer over ``model``'s parameters, and with
    ``train.sparse_embeddings`` a sparse optimizer of the same kind over the embedding tables,
    whose gradients become sparse, so a step costs the batch's rows, not the tables. Call it
    before wrapping the model in DDP, which lays out its buckets by the gradients' kind.

    ``fused_tables`` (torchrec's): the tables update themselves in the backward
    (`advrec.train.sharding`), so this optimizer has the other parameters only, if any."""
    if fused_tables:
        from advrec.train.sharding import sharded_tables

        tables = {id(p) for t in sharded_tables(model).values() for p in t.parameters()}
        dense = [p for p in model.parameters() if id(p) not in tables]
        return SplitOptimizer([OPTIMIZERS[cfg.optimizer](dense, lr=cfg.lr,
                                                         weight_decay=cfg.weight_decay)]
                              if dense else [])
    if not cfg.sparse_embeddings:
        return OPTIMIZERS[cfg.optimizer](model.parameters(), lr=cfg.lr,
                                         weight_decay=cfg.weight_decay)
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for table in tables:
        table.sparse = True
    sparse = {id(t.weight) for t in tables}
    dense = [p for p in model.parameters() if id(p) not in sparse]
    parts = [SPARSE_OPTIMIZERS[cfg.optimizer]([t.weight for t in tables], lr=cfg.lr)]
    if dense:
        parts.append(OPTIMIZERS[cfg.optimizer](dense, lr=cfg.lr))
    return SplitOptimizer(parts)


def attack_from_config(cfg: RunConfig) -> Attack:
    adv = cfg.adv
    return Attack(method=adv.method, eps=adv.eps, steps=adv.steps, step_size=adv.step_size,
                  norm=adv.norm, random_start=adv.random_start, relative=adv.relative)


def distribute(objective: AdversarialObjective, world: int) -> nn.Module:
    """Wrap the objective in DDP when ``world`` > 1 workers train together (over the process
    group Ray Train set up: gloo on CPU, NCCL with ``scaling.use_gpu``).

    Embedding gradients are dense unless ``train.sparse_embeddings`` made them sparse
    (`make_optimizer`): DDP all-reduces those as sparse tensors, which gloo can and NCCL cannot.
    """
    if world == 1:
        return objective
    return DistributedDataParallel(objective, find_unused_parameters=False)


def epoch_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """One epoch's shuffling, negatives and random attacks on worker ``rank``: a stream of its
    own per worker, so shards never draw the same negatives, and a function of (seed, rank,
    epoch) alone, so a restarted epoch draws what it drew the first time."""
    # hash() of a tuple of ints is the same in every process (only str hashes are salted)
    return torch.Generator().manual_seed(hash((seed, rank, epoch)) % 2**63)


def train_epoch(objective: nn.Module, optimizer: Optimizer, task: Task,
                batch_size: int, adversarial: bool, generator: torch.Generator,
                device: torch.device = CPU,
                fault: Callable[[], None] | None = None, epoch: int = 0) -> dict[str, float]:
    """One pass over the task's training batches (of this worker's shard, made on the CPU and
    trained on ``device``); returns mean losses.

    ``fault``: called after the first step, mid-epoch (fault injection, `inject_fault`).
    ``epoch`` (0-based) names the epoch in errors.

    Raises:
        AdvrecError: when the loss turns non-finite (naming the epoch and the step), or when
            this worker's shard has no batches at all.
    """
    totals = {"loss": 0.0, "clean": 0.0, "adv": 0.0}
    n_batches = 0
    for batch in task.batches(batch_size, generator):
        if fault and n_batches == 1:
            fault()
        out = objective(to_device(batch, device), adversarial=adversarial, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        for key in totals:
            if key in out:
                totals[key] += out[key].item()
        n_batches += 1
        # the sum was finite until this step: a check of what .item() already synchronised
        if not math.isfinite(totals["loss"]):
            raise AdvrecError(
                f"the training loss is {out['loss'].item()} at epoch {epoch + 1}, step "
                f"{n_batches}: training diverged (a lower train.lr or adv.eps may help)")
    if n_batches == 0:
        rank, world = task.shard
        raise AdvrecError(f"epoch {epoch + 1}: worker {rank} of {world} got no training rows "
                          "(the train split has fewer rows than scaling.num_workers)")
    return {k: v / n_batches for k, v in totals.items() if k != "adv" or adversarial}


@dataclass
class EarlyStopping:
    """The best epoch so far by the monitored valid metric, its weights, and epochs since it
    improved.

    ``spill``: (run directory, rank) of a run with sharded tables, whose best weights go to
    ``run/best/epoch-N/`` (every worker its shards) instead of a second copy in memory: tables
    too large for one worker should not be held twice. The directory a training state refers
    to is kept until a later state refers to another (`save_state`), so a resumed run finds it.
    """

    higher_is_better: bool
    value: float | None = None
    epoch: int = -1
    valid: dict[str, float] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    stale: int = 0
    spill: tuple[str, int] | None = None
    saved: int = -1  # spilled: the best epoch the latest training state refers to

    def update(self, epoch: int, valid: dict[str, float], value: float, model: nn.Module) -> None:
        if self.value is None or (value > self.value if self.higher_is_better
                                  else value < self.value):
            self.value, self.epoch, self.valid, self.stale = value, epoch, valid, 0
            self.keep(model)
        else:
            self.stale += 1

    def keep(self, model: nn.Module) -> None:
        """Keep the model's weights as the best epoch's."""
        if self.spill is None:
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return
        run, rank = self.spill
        save_sharded(best_url(run, self.epoch), {"model": model.state_dict()})
        if rank == 0:
            prune_best(run, {self.epoch, self.saved})

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights into the model."""
        if self.spill is None:
            model.load_state_dict(self.weights)
            return
        state = model.state_dict()
        load_sharded(best_url(self.spill[0], self.epoch), {"model": state})
        model.load_state_dict(state)

    def restart(self) -> None:
        """Forget the best so far (the adversarial phase starts after a clean warm-up)."""
        self.value, self.stale = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything but the direction and where weights spill, which the run gives (for a
        checkpoint)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("higher_is_better", "spill")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def inject_fault(cfg: RunConfig) -> None:
    """``train.fault_epoch``: die as a crashed worker would (a process killed by the OS), or
    raise when training in this process, which must survive to report it."""
    if cfg.scaling.num_workers:
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"fault injected in epoch {cfg.train.fault_epoch} (train.fault_epoch)")


def ray_train_loggers() -> tuple[logging.Logger, logging.Logger] | None:
    """Two loggers of Ray Train's private modules, which its LoggingConfig does not reach: the
    one that logs every report at INFO with all its metrics, and the one that logs the
    traceback of any error the training function raises. Ray has no public handle on them: this
    is the one place that reaches into Ray's internals, and tests/train/test_loop.py fails when
    Ray moves or renames them. ``None`` if it has (training goes on, only louder)."""
    try:
        from ray.train.v2._internal import util
        from ray.train.v2._internal.execution import context
    except ImportError:
        return None
    loggers = getattr(context, "logger", None), getattr(util, "logger", None)
    if not all(isinstance(logger, logging.Logger) for logger in loggers):
        return None
    return loggers  # type: ignore[return-value]


class _BadInputTraceback(logging.Filter):
    """Drops Ray Train's traceback of an `AdvrecError` (bad input): the driver prints its one
    line (`advrec.train.driver.launch`), and a traceback per worker above it says nothing more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"\n{AdvrecError.__module__}.{AdvrecError.__name__}: " not in record.getMessage()


def quiet_ray_train() -> None:
    """Quiet Ray Train's loggers (`ray_train_loggers`) on this worker: reports go to WARNING
    (the progress bar, or the per-epoch line, already shows the metrics), and bad input's
    traceback goes."""
    loggers = ray_train_loggers()
    if loggers is None:
        return
    reports, errors = loggers
    reports.setLevel(logging.WARNING)
    if not any(isinstance(f, _BadInputTraceback) for f in errors.filters):
        errors.addFilter(_BadInputTraceback())


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Train one model. ``config``: ``run`` (a RunConfig dict), ``dataset`` and ``output`` URLs.

    Continues from the latest training state in ``output`` when there is one (a resumed run, or
    workers restarted by Ray Train after a failure). Returns the final metrics (also written to
    ``output/metrics.json``).
    """
    entered = time.perf_counter()
    quiet_ray_train()
    tune_malloc()  # before the first tensor: freed activations stay in the process
    cfg = RunConfig.model_validate(config["run"])
    with allocating(cfg.model):  # a failed allocation: one line naming model.dim
        if cfg.model.embeddings == "torchrec":  # sharding needs a process group, even of one
            from advrec.train.sharding import process_group

            with process_group():
                return _train(cfg, config, entered)
        return _train(cfg, config, entered)


def _train(cfg: RunConfig, config: dict[str, Any], entered: float) -> dict[str, Any]:
    output: str = config["output"]
    progress: bool = config.get("progress", True)
    tc = cfg.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    progress = progress and rank == 0
    batch_size = -(-tc.batch_size // world)  # per worker; the global batch stays tc.batch_size

    torch.manual_seed(tc.seed)  # model init, the same on every worker
    # the training rows stream from Ray Data: only the train split's pairs are loaded
    data = load_dataset(config["dataset"], train_pairs_only=cfg.data.stream)
    device = train_device(cfg.scaling.use_gpu, ray_worker=cfg.scaling.num_workers > 0)
    sharded = cfg.model.embeddings == "torchrec"
    check_fits(cfg.model, data.num_users, data.num_items, tc.optimizer,
               share=world if sharded else 1)
    # torchrec's tables are built on the meta device: each worker allocates its shard only
    model: Recommender = build_model(cfg, data, sharded=sharded)
    if not sharded:
        model = model.to(device)  # before its optimizer's state
    optimizer = make_optimizer(model, tc, fused_tables=sharded)
    loss_fn = make_loss(cfg)
    objective: nn.Module = AdversarialObjective(
        model, loss_fn, attack_from_config(cfg), lam=cfg.adv.lam, target=cfg.adv.target,
        reg=tc.reg)
    tables: torch.optim.Optimizer | None = None  # sharded tables' fused optimizer
    if sharded:
        from advrec.train.sharding import shard

        objective = shard(objective, model, cfg, device)
        tables = objective.fused_optimizer
        # what each worker holds of the tables (metrics.json shows it)
        held = sum(p.numel() * p.element_size()
                   for t in model.tables().values() for p in t.parameters())
        table_bytes = gather_objects(held, (rank, world))
    else:
        objective = distribute(objective, world)
    monitor, higher_is_better = cfg.monitor()
    best = EarlyStopping(higher_is_better, spill=(output, rank) if sharded else None)
    history: list[dict[str, Any]] = []
    state = load_train_state(output)
    if state is not None:  # everything that decides what happens next, so the run continues
        if len(state["rng"]) != world:  # as if it had never stopped
            raise AdvrecError(f"{output}: saved by {len(state['rng'])} workers; resume it with "
                              f"scaling.num_workers={len(state['rng'])}")
        if tables is not None:
            load_sharded_state(output, state, model, tables)
        load_weights(output, model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"][rank]["torch"])  # dropout's
        best.load_state_dict(state["early_stopping"])
        history = state["history"]
    first = len(history)
    task = make_task(cfg, data, shard=(rank, world),
                     stream=ray.train.get_dataset_shard("train") if cfg.data.stream else None)
    if cfg.eval.robust_every:  # the robust/... attack differentiates the same examples each time
        attacked = attack_batches(make_task(cfg, data), cfg.eval.robust_rows, cfg.eval.seed)

    def robust_valid() -> dict[str, float]:
        """Valid metrics under ``eval.robust_attack`` at ``eval.robust_eps``."""
        return attacked_metrics(model, task, loss_fn, cfg.eval, attacked,
                                robust_attack(cfg.eval), "valid")

    latest: dict[str, float] = {}  # the last valid and robust metrics, carried into each report

    bar = tqdm(range(first, tc.epochs), desc=f"train {cfg.model.name}/{cfg.adv.method}",
               unit="epoch", initial=first, total=tc.epochs,
               disable=None if progress else True)  # None: only on a terminal
    stopped = bool(history) and history[-1].get("stopped", False)
    for epoch in bar if not stopped else ():
        adversarial = cfg.adv.method != "none" and epoch >= cfg.adv.start_epoch
        if adversarial and epoch == cfg.adv.start_epoch and epoch > 0:
            # the adversarial phase starts: select the best model, and count patience, among
            # adversarial epochs only, so a clean warm-up epoch is never returned as "the" model
            best.restart()
        model.train()
        start = time.perf_counter()
        generator = epoch_generator(tc.seed, rank, epoch)  # shuffling, negatives, random attacks
        fault = epoch == tc.fault_epoch and state is None and rank == world - 1
        losses = train_epoch(objective, optimizer, task, batch_size, adversarial, generator,
                             device, fault=(lambda: inject_fault(cfg)) if fault else None,
                             epoch=epoch)
        record: dict[str, Any] = {"epoch": epoch, "adversarial": adversarial,
                                  "train_s": time.perf_counter() - start, **losses}
        if epoch == first:  # loading the data, building the model, setting up DDP
            record["setup_s"] = start - entered
        if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs:
            start = time.perf_counter()
            valid = task.evaluate(model, "valid", cfg.eval)
            record["eval_s"] = time.perf_counter() - start
            record.update({f"valid/{k}": v for k, v in valid.items()})
            evaluations = sum("eval_s" in r for r in history)  # before this one
            if cfg.eval.robust_every and evaluations % cfg.eval.robust_every == 0:
                start = time.perf_counter()
                record.update({f"robust/{k}": v for k, v in robust_valid().items()})
                record["robust_s"] = time.perf_counter() - start
            best.update(epoch, valid, valid[monitor], model)
            bar.set_postfix(loss=f"{losses['loss']:.4f}", **{monitor: f"{valid[monitor]:.4f}"},
                            best=f"{best.value:.4f}")
        if progress and bar.disable:
            # not a terminal (a log file, a Ray job's logs): one line per epoch instead of a bar
            key = f"valid/{monitor}"
            shown = f" {monitor} {record[key]:.4f}" if key in record else ""
            # not print(), which Ray Train workers also copy to their log: the line came twice
            sys.stdout.write(f"epoch {epoch + 1}/{tc.epochs} loss {losses['loss']:.4f}{shown} "
                             f"({record['train_s']:.1f} s)\n")
            sys.stdout.flush()
        # a clean warm-up always runs to its end: APR's adversarial phase starts from it
        warming_up = cfg.adv.method != "none" and not adversarial
        record["stopped"] = bool(tc.patience and best.stale >= tc.patience and not warming_up)
        history.append(record)
        ray.train.report(epoch_metrics(record, latest, cfg))
        if tc.checkpoint_every and ((epoch + 1) % tc.checkpoint_every == 0 or record["stopped"]):
            save_state(output, model, optimizer, best, history, (rank, world), tables)
        if record["stopped"]:
            break
    bar.close()

    best.restore(model)
    metrics = {
        "best_epoch": best.epoch,
        "valid": best.valid,  # evaluated when that epoch's weights were kept
        "test": task.evaluate(model, "test", cfg.eval),
    }
    if cfg.eval.robust_every:
        metrics["robust_valid"] = robust_valid()  # of the best epoch's weights
    if sharded:
        metrics["table_bytes"] = table_bytes  # per worker
    # each worker's peak resident memory so far: what the run needed (KiB on Linux, bytes on
    # macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    metrics["peak_rss_bytes"] = gather_objects(
        peak * (1 if sys.platform == "darwin" else 1024), (rank, world))
    save_checkpoint(io.join(output, "checkpoint", "model.pt"), model, cfg, best.epoch,
                    (rank, world))
    if rank != 0:
        return metrics
    if sharded:  # the best epoch's weights are in the checkpoint now
        prune_best(output, set())
    io.dump_json(io.join(output, "history.json"), history)
    io.dump_json(io.join(output, "metrics.json"), metrics)
    return metrics


def epoch_metrics(record: dict[str, Any], latest: dict[str, float],
                  cfg: RunConfig) -> dict[str, float]:
    """What an epoch reports to Ray Train (and so to Ray Tune, through its callback, in a trial
    of `advrec tune`): its numbers, the latest valid and robust metrics (``latest``, updated
    here: a search compares every epoch's), ``objective``, the ``tune.weights`` sum, and
    ``epochs`` run."""
    latest.update({k: v for k, v in record.items() if k.startswith(("valid/", "robust/"))})
    metrics = {**latest, **{k: v for k, v in record.items() if isinstance(v, (int, float))},
               "epochs": record["epoch"] + 1}  # a scheduler's clock: epochs run, resumed or not
    if cfg.tune.weights and all(k in metrics for k in cfg.tune.weights):
        metrics["objective"] = sum(w * metrics[k] for k, w in cfg.tune.weights.items())
    return metrics


def save_state(output: str, model: nn.Module, optimizer: Optimizer,
               best: EarlyStopping, history: list[dict[str, Any]], shard: tuple[int, int],
               tables: torch.optim.Optimizer | None = None) -> None:
    """Rank 0 saves the training state after the last epoch of ``history``, with every
    worker's torch random state (dropout's; each continues its own), keeping the best epoch's
    state too. Sampling needs none: each epoch seeds its own (`epoch_generator`).

    With sharded tables (their fused optimizer ``tables``), every worker saves its shards of
    the model and of the tables' optimizer state (the best epoch's weights are spilled
    already, `EarlyStopping`)."""
    rng = {"torch": torch.get_rng_state()}
    ranks = gather_objects(rng, shard)
    state = {
        "epoch": history[-1]["epoch"],
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": ranks,
        "early_stopping": best.state_dict(),
        "history": history,
    }
    sharded = None
    if tables is not None:  # tensors only: the file keeps everything else
        sharded = {"model": state.pop("model"), "tables": tables.state_dict()["state"]}
    save_train_state(output, state, keep=best.epoch, sharded=sharded, rank=shard[0])
    if best.spill is not None:  # the state refers to this best epoch's weights from now on
        best.saved = best.epoch
        if shard[0] == 0:
            prune_best(output, {best.epoch})


def load_sharded_state(output: str, state: dict[str, Any], model: nn.Module,
                       tables: torch.optim.Optimizer) -> None:
    """Read the sharded part of a training state (`save_state`) into ``state``, as this
    worker holds it, and the tables' optimizer state into ``tables``."""
    wanted = {"model": model.state_dict(), "tables": tables.state_dict()["state"]}
    load_sharded(sharded_dir(train_state_url(output, state["epoch"])), wanted)
    tables.load_state_dict({**tables.state_dict(), "state": wanted["tables"]})
    state["model"] = wanted["model"]
