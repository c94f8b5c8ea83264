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
from dataclasses import dataclass
from typing import Any

import ray.train
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from advrec import io
from advrec.adversarial import AdversarialObjective, Attack
from advrec.adversarial.jsma_fields import check_fields
from advrec.adversarial.memory import DeltaMemory, ShardedDeltaMemory
from advrec.config import AdvConfig, RunConfig
from advrec.config.policy import TARGET
from advrec.data.dataset import load_dataset
from advrec.devices import CPU, placement, to_device, train_device
from advrec.errors import AdvrecError
from advrec.metrics.robustness import attack_batches, attacked_metrics, robust_attack
from advrec.metrics.target import TargetItems, TargetMetrics
from advrec.models import build_model
from advrec.models.base import Recommender
from advrec.models.fields import FieldModel
from advrec.models.losses import LossFn
from advrec.models.memory import allocating, check_fits
from advrec.shards import gather_objects
from advrec.train.allocator import tune_malloc
from advrec.train.checkpoint import (
    load_train_state,
    load_weights,
    model_url,
    prune_best,
    save_checkpoint,
)
from advrec.train.loggers import EpochLogger, make_loggers
from advrec.train.optim import Optimizer, make_optimizer
from advrec.train.schedules import attack_from_config, collapsed, training_attack
from advrec.train.state import EarlyStopping, load_sharded_state, save_state
from advrec.train.tasks import Task, make_loss, make_task
from advrec.train.warm import warm_start


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
                fault: Callable[[], None] | None = None, epoch: int = 0,
                replays: int = 1, memory: DeltaMemory | None = None) -> dict[str, float]:
    """One pass over the task's training batches (of this worker's shard, made on the CPU and
    trained on ``device``); returns mean losses, over every optimizer step.

    ``replays`` > 1 (``adv.schedule=free``): each batch takes that many optimizer steps, each
    replay's forward given the δ of the one before (whose ``.grad`` its backward filled).
    ``memory`` (``adv.schedule=accumulate``, the objective's): each backward's gradient moves
    the δ rows the batch trained on (`DeltaMemory.step`).

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
        batch = to_device(batch, device)
        previous = None
        for _ in range(replays):
            out = objective(batch, adversarial=adversarial, generator=generator,
                            previous=previous)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if memory is not None and adversarial:
                memory.step()
            previous = out.get("delta")
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
    """Train one model. ``config``: ``run`` (a RunConfig dict), ``dataset`` and ``output`` URLs,
    and ``targets``, the target items the driver resolved (`TargetItems` as a dict), if any.

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


@dataclass
class Training:
    """What one worker trains with: built once (`_build`), then used by every epoch."""

    cfg: RunConfig
    output: str
    shard: tuple[int, int]  # (rank, world)
    device: torch.device
    model: Recommender
    optimizer: Optimizer
    objective: nn.Module  # the model's adversarial objective, DDP-wrapped or sharded
    tables: torch.optim.Optimizer | None  # sharded tables' fused optimizer
    loss_fn: LossFn
    task: Task
    attacked: list[dict[str, torch.Tensor]] | None  # the robust/... attack's examples
    targets: TargetMetrics | None  # the target items' T-HR and T-NDCG, if it has any
    memory: DeltaMemory | None  # adv.schedule=accumulate's δ per row, this worker's

    def robust_valid(self) -> dict[str, float]:
        """Valid metrics under ``eval.robust_attack`` at ``eval.robust_eps``."""
        assert self.attacked is not None
        return attacked_metrics(self.model, self.task, self.loss_fn, self.cfg.eval,
                                self.attacked, robust_attack(self.cfg.eval), "valid")

    def target(self, split: str) -> dict[str, float]:
        """The target items' ``hr@K`` and ``ndcg@K`` on ``split``."""
        assert self.targets is not None
        return self.targets(self.model, split, self.task.context, self.cfg.eval.batch_users,
                            self.shard)


def _train(cfg: RunConfig, config: dict[str, Any], entered: float) -> dict[str, Any]:
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    progress = config.get("progress", True) and rank == 0
    run = _build(cfg, config, (rank, world))
    best, history, resumed = _resume(run)
    if cfg.train.init_from and not resumed:  # a resumed run's state holds its own weights
        warm_start(cfg, run.task.data, run.model, run.optimizer)
    first = len(history)
    latest: dict[str, float] = {}  # the last valid and robust metrics, carried into each report

    epochs = cfg.adv.epochs_run(cfg.train.epochs)  # fewer with adv.schedule=free
    bar = tqdm(range(first, epochs), desc=f"train {cfg.model.name}/{cfg.adv.method}",
               unit="epoch", initial=first, total=epochs,
               disable=None if progress else True)  # None: only on a terminal
    stopped = bool(history) and history[-1].get("stopped", False)
    loggers = make_loggers(cfg, run.output) if rank == 0 else []
    try:
        if not stopped:
            _epochs(run, bar, first, entered, best, history, latest, loggers, progress, resumed)
    finally:
        for logger in loggers:
            logger.close()
    bar.close()
    return _finish(run, best, history)


def _epochs(run: Training, bar: tqdm, first: int, entered: float, best: EarlyStopping,
            history: list[dict[str, Any]], latest: dict[str, float],
            loggers: list[EpochLogger], progress: bool, resumed: bool) -> None:
    """Train the epochs of ``bar`` (from ``first``), each recorded in ``history``, reported,
    logged and checkpointed, until early stopping or the last."""
    cfg = run.cfg
    for epoch in bar:
        setup = time.perf_counter() - entered  # loading the data, building the model, DDP
        record = _epoch(run, epoch, best, history, fault=not resumed)
        if epoch == first:
            record["setup_s"] = setup
        if "eval_s" in record and best.value is not None:
            monitor = cfg.monitor()[0]
            bar.set_postfix(loss=f"{record['loss']:.4f}",
                            **{monitor: f"{record['valid/' + monitor]:.4f}"},
                            best=f"{best.value:.4f}")
        if progress and bar.disable:
            _epoch_line(record, cfg)
        history.append(record)
        ray.train.report(epoch_metrics(record, latest, cfg))
        for logger in loggers:
            logger.log(record, epoch)
        every = cfg.train.checkpoint_every
        if every and ((epoch + 1) % every == 0 or record["stopped"]):
            save_state(run.output, run.model, run.optimizer, best, history, run.shard,
                       run.tables, run.memory)
        if record["stopped"]:
            break


def _build(cfg: RunConfig, config: dict[str, Any], shard: tuple[int, int]) -> Training:
    """Load the data, build the model, its optimizer and its adversarial objective (DDP-wrapped,
    or with torchrec's tables sharded across the workers), and this worker's task."""
    torch.manual_seed(cfg.train.seed)  # model init, the same on every worker
    # the training rows stream from Ray Data: only the train split's pairs are loaded
    data = load_dataset(config["dataset"], train_pairs_only=cfg.data.stream)
    device = train_device(cfg.scaling.use_gpu, ray_worker=cfg.scaling.num_workers > 0)
    sharded = cfg.model.embeddings == "torchrec"
    check_fits(cfg.model, data.num_users, data.num_items, cfg.train.optimizer,
               share=shard[1] if sharded else 1)
    # torchrec's tables are built on the meta device: each worker allocates its shard only
    model: Recommender = build_model(cfg, data, sharded=sharded)
    for name, adversary in cfg.adv.adversaries():
        if adversary.method == "jsma-fields":  # the config allows feature models alone
            check_fields(list(model.feature_fields()) if isinstance(model, FieldModel) else [],
                         adversary.budget, f"{name}.method=jsma-fields",
                         f"{name}.budget={adversary.budget}", config["dataset"])
    if not sharded:
        model = model.to(device)  # before its optimizer's state
    optimizer = make_optimizer(model, cfg.train, fused_tables=sharded)
    loss_fn = make_loss(cfg)
    adversarial = make_objective(cfg, model, loss_fn)
    objective: nn.Module = adversarial
    tables = None
    if sharded:
        from advrec.train.sharding import shard as shard_tables

        objective = shard_tables(objective, model, cfg, device)
        tables = objective.fused_optimizer
    else:
        objective = distribute(objective, shard[1])
    task = make_task(cfg, data, shard=shard,
                     stream=ray.train.get_dataset_shard("train") if cfg.data.stream else None)
    # the robust/... attack differentiates the same examples every time
    attacked = (attack_batches(make_task(cfg, data), cfg.eval.robust_rows, cfg.eval.seed)
                if cfg.eval.robust_every else None)
    targets = config.get("targets")
    return Training(cfg, config["output"], shard, device, model, optimizer, objective, tables,
                    loss_fn, task, attacked,
                    TargetMetrics(data, TargetItems(**targets), cfg.eval.target_k)
                    if targets else None, adversarial.memory)


def make_objective(cfg: RunConfig, model: Recommender, loss_fn: LossFn) -> AdversarialObjective:
    """The adversarial objective ``cfg`` trains ``model`` with: its adversaries
    (`training_attack` under ``adv.schedule``, and ``adv.mix``), λ, target rows, regulariser,
    adaptive ε, and the schedule's state (free's kept δ, accumulate's `DeltaMemory`)."""
    attack = training_attack(cfg.adv)
    return AdversarialObjective(
        model, loss_fn, attack, lam=cfg.adv.lam, target=cfg.adv.target,
        reg=cfg.train.reg, adaptive=cfg.adv.adaptive, adaptive_lambda=cfg.adv.adaptive_lambda,
        mix=[(attack_from_config(a), a.lam, a.target) for a in cfg.adv.mix],
        keep_delta=cfg.adv.replays > 1,
        memory=make_memory(cfg.adv, attack))


def make_memory(adv: AdvConfig, attack: Attack) -> DeltaMemory | None:
    """``adv.schedule=accumulate``'s δ memory for ``attack``, per worker or sharded across the
    process group (``adv.memory``); None under any other schedule."""
    if adv.schedule != "accumulate":
        return None
    return (ShardedDeltaMemory if adv.memory == "sharded" else DeltaMemory)(attack)


def _resume(run: Training) -> tuple[EarlyStopping, list[dict[str, Any]], bool]:
    """Early stopping and the epoch history, from the latest training state in the run
    directory when there is one (a resumed run, or workers Ray Train restarted), loaded with
    everything else that decides what happens next, so the run continues as if it had never
    stopped; and whether there was one."""
    rank, world = run.shard
    sharded = run.tables is not None
    best = EarlyStopping(run.cfg.monitor()[1], spill=(run.output, rank) if sharded else None)
    state = load_train_state(run.output)
    if state is None:
        return best, [], False
    if len(state["rng"]) != world:
        raise AdvrecError(f"{run.output}: saved by {len(state['rng'])} workers; resume it with "
                          f"scaling.num_workers={len(state['rng'])}")
    if run.tables is not None:
        load_sharded_state(run.output, state, run.model, run.tables)
    load_weights(run.output, run.model, state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"][rank]["torch"])  # dropout's
    if run.memory is not None:
        run.memory.load_state_dict(state["memory"][rank], run.device)
    best.load_state_dict(state["early_stopping"])
    return best, state["history"], True


def _epoch(run: Training, epoch: int, best: EarlyStopping, history: list[dict[str, Any]],
           fault: bool) -> dict[str, Any]:
    """Train one epoch, evaluate it when due, and keep its weights if they are the best;
    returns its record for the history (with ``stopped``: whether early stopping ends the run
    here). ``fault``: `train.fault_epoch` may fire (not in
    a resumed or restarted run)."""
    cfg, tc = run.cfg, run.cfg.train
    rank, world = run.shard
    adversarial = bool(cfg.adv.adversaries()) and epoch >= cfg.adv.start_epoch
    if adversarial and epoch == cfg.adv.start_epoch and epoch > 0:
        # the adversarial phase starts: select the best model, and count patience, among
        # adversarial epochs only, so a clean warm-up epoch is never returned as "the" model
        best.restart()
    if adversarial and run.memory is not None:
        run.memory.decay(cfg.adv.decay)
    run.model.train()
    start = time.perf_counter()
    generator = epoch_generator(tc.seed, rank, epoch)  # shuffling, negatives, random attacks
    fires = fault and epoch == tc.fault_epoch and rank == world - 1
    batch_size = -(-tc.batch_size // world)  # per worker; the global batch stays tc.batch_size
    losses = train_epoch(run.objective, run.optimizer, run.task, batch_size, adversarial,
                         generator, run.device, fault=(lambda: inject_fault(cfg)) if fires else None,
                         epoch=epoch, replays=cfg.adv.replays if adversarial else 1,
                         memory=run.memory)
    record: dict[str, Any] = {"epoch": epoch, "adversarial": adversarial,
                              "train_s": time.perf_counter() - start, **losses}
    if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == cfg.adv.epochs_run(tc.epochs):
        monitor, higher = cfg.monitor()
        started = time.perf_counter()
        valid = run.task.evaluate(run.model, "valid", cfg.eval)
        record["eval_s"] = time.perf_counter() - started
        record.update({f"valid/{k}": v for k, v in valid.items()})
        if run.targets is not None:  # as valid: the train split's items masked
            started = time.perf_counter()
            record.update({f"{TARGET}{k}": v for k, v in run.target("valid").items()})
            record["target_s"] = time.perf_counter() - started
        evaluations = sum("eval_s" in r for r in history)  # before this one
        if cfg.eval.robust_every and evaluations % cfg.eval.robust_every == 0:
            started = time.perf_counter()
            record.update({f"robust/{k}": v for k, v in run.robust_valid().items()})
            record["robust_s"] = time.perf_counter() - started
        if cfg.adv.schedule == "fast" and collapsed(record, history, monitor, higher,
                                                    cfg.adv.guard):
            record["collapsed"] = True  # not kept: the best epoch is one before the collapse
        else:
            best.update(epoch, valid, valid.get(monitor), run.model)
    # a clean warm-up always runs to its end: APR's adversarial phase starts from it
    warming_up = bool(cfg.adv.adversaries()) and not adversarial
    record["stopped"] = bool(tc.patience and best.stale >= tc.patience and not warming_up
                             or record.get("collapsed"))
    return record


def _epoch_line(record: dict[str, Any], cfg: RunConfig) -> None:
    """The progress of an epoch where no terminal shows a bar (a log file, a Ray job's logs)."""
    key = f"valid/{cfg.monitor()[0]}"
    shown = f" {cfg.monitor()[0]} {record[key]:.4f}" if key in record else ""
    # not print(), which Ray Train workers also copy to their log: the line came twice
    sys.stdout.write(f"epoch {record['epoch'] + 1}/{cfg.adv.epochs_run(cfg.train.epochs)} loss "
                     f"{record['loss']:.4f}{shown} ({record['train_s']:.1f} s)\n")
    sys.stdout.flush()


def _finish(run: Training, best: EarlyStopping, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Restore the best epoch's weights, evaluate them on valid (robust) and test, and write the
    run directory's checkpoint (every worker its shards), history and metrics (rank 0)."""
    cfg, output = run.cfg, run.output
    best.restore(run.model)
    metrics = {
        "best_epoch": best.epoch,
        "valid": best.valid,  # evaluated when that epoch's weights were kept
        "test": run.task.evaluate(run.model, "test", cfg.eval),
    }
    if cfg.eval.robust_every:
        metrics["robust_valid"] = run.robust_valid()  # of the best epoch's weights
    if run.targets is not None:
        metrics["target"] = {**run.targets.describe(), "valid": run.target("valid"),
                             "test": run.target("test")}
    if run.tables is not None:  # what each worker holds of the tables
        held = sum(p.numel() * p.element_size()
                   for t in run.model.tables().values() for p in t.parameters())
        metrics["table_bytes"] = gather_objects(held, run.shard)
    # each worker's peak resident memory so far: what the run needed (KiB on Linux, bytes on
    # macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    metrics["peak_rss_bytes"] = gather_objects(
        peak * (1 if sys.platform == "darwin" else 1024), run.shard)
    metrics["devices"] = gather_objects(placement(run.device), run.shard)
    save_checkpoint(model_url(output), run.model, cfg, best.epoch,
                    run.shard)
    if run.shard[0] != 0:
        return metrics
    if run.tables is not None:  # the best epoch's weights are in the checkpoint now
        prune_best(output, set())
    io.dump_json(io.join(output, "history.json"), history)
    io.dump_json(io.join(output, "metrics.json"), metrics)
    return metrics


def epoch_metrics(record: dict[str, Any], latest: dict[str, float],
                  cfg: RunConfig) -> dict[str, float]:
    """What an epoch reports to Ray Train (and so to Ray Tune, through its callback, in a trial
    of `advrec tune`): its numbers, the latest valid, robust and target metrics (``latest``,
    updated here: a search compares every epoch's), ``objective``, the ``tune.weights`` sum,
    and ``epochs`` run."""
    latest.update({k: v for k, v in record.items()
                   if k.startswith(("valid/", "robust/", TARGET))})
    metrics = {**latest, **{k: v for k, v in record.items() if isinstance(v, (int, float))},
               "epochs": record["epoch"] + 1}  # a scheduler's clock: epochs run, resumed or not
    if cfg.tune.weights and all(k in metrics for k in cfg.tune.weights):
        metrics["objective"] = sum(w * metrics[k] for k, w in cfg.tune.weights.items())
    return metrics
