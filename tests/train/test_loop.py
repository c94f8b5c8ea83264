"""The training loop's guards: a loss that turns non-finite stops training naming the epoch and
the step, a shard without rows is an error (never a division by zero) and, with fewer rows than
workers, gets the first rows as DistributedSampler's padding does; and the one reach into Ray's
internals (`ray_train_loggers`) still finds what it needs; the optimizer's betas and
early stopping's patience (counted in evaluations)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from advrec.adversarial import AdversarialObjective
from advrec.config import build_config
from advrec.data import load_dataset
from advrec.data.dataset import Interactions
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.train import run_training
from advrec.train.loop import attack_from_config, quiet_ray_train, ray_train_loggers, train_epoch
from advrec.train.optim import make_optimizer
from advrec.train.tasks import MemoryRows, PairTask, epoch_order, make_loss, make_task
from synthetic import prepared_synth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_synth(tmp_path_factory.mktemp("loop"), 30, 30, 400)


def _objective(cfg, data):
    torch.manual_seed(0)
    model = build_model(cfg, data)
    objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv),
                                     lam=cfg.adv.lam, target=cfg.adv.target, reg=cfg.train.reg)
    return objective, make_optimizer(model, cfg.train)


def test_a_non_finite_loss_stops_training_naming_epoch_and_step(dataset: str) -> None:
    # an FGM budget of 1e30 makes the adversarial loss overflow at the first step
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                        "adv": {"method": "fgm", "eps": 1e30}})
    data = load_dataset(dataset)
    objective, optimizer = _objective(cfg, data)
    with pytest.raises(AdvrecError, match=r"^the training loss is (nan|inf) at epoch 3, step 1: "
                       r"training diverged"):
        train_epoch(objective, optimizer, make_task(cfg, data), 64, True,
                    torch.Generator().manual_seed(0), epoch=2)
    clean = build_config({"data": {"source": dataset}, "model": {"dim": 8}})
    objective, optimizer = _objective(clean, data)
    losses = train_epoch(objective, optimizer, make_task(clean, data), 64, False,
                         torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.tensor(losses["loss"]))


def test_a_shard_without_rows_is_an_error_not_a_division_by_zero(dataset: str) -> None:
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8}})
    data = load_dataset(dataset)
    objective, optimizer = _objective(cfg, data)
    empty = Interactions(user=torch.zeros(0, dtype=torch.long),
                         item=torch.zeros(0, dtype=torch.long))
    task = PairTask(data, 1, shard=(1, 2), rows=MemoryRows(empty, ("user", "item"), (1, 2)))
    with pytest.raises(AdvrecError, match=r"^epoch 1: worker 1 of 2 got no training rows"):
        train_epoch(objective, optimizer, task, 64, False, torch.Generator().manual_seed(0))


def test_fewer_rows_than_workers_pad_every_shard_to_as_many_rows() -> None:
    g = torch.Generator().manual_seed(0)
    assert epoch_order(1, (0, 2), g, True).tolist() == [0]
    assert epoch_order(1, (1, 2), g, True).tolist() == [0]  # no row of its own: the first
    assert epoch_order(1, (2, 3), g, True).tolist() == [0]
    assert [epoch_order(3, (r, 4), g, False).tolist() for r in range(4)] == [[0], [1], [2], [0]]
    assert epoch_order(5, (1, 2), g, False).tolist() == [1, 3, 1]


def test_ray_train_loggers_are_still_where_advrec_quiets_them(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ray Train logs each report, and each error's traceback, from private modules; when Ray
    moves them, this fails (and training only gets louder): find their new place for
    `ray_train_loggers`."""
    loggers = ray_train_loggers()
    assert loggers is not None, "ray.train.v2._internal's context.logger or util.logger is gone"
    from ray.train.v2._internal import util
    from ray.train.v2._internal.execution import context

    reports, errors = loggers
    assert reports is logging.getLogger(context.__file__)
    quiet_ray_train()
    assert reports.level == logging.WARNING
    errors.addHandler(caplog.handler)  # Ray's loggers may not propagate to the root
    try:
        # what a Ray Train worker does with an error of the training function
        for exc, logged in ((AdvrecError("bad input"), False), (RuntimeError("a bug"), True)):
            caplog.clear()
            try:
                raise exc
            except Exception as e:  # noqa: BLE001 - the worker's catch-all
                util.construct_user_exception_with_traceback(e)
            assert any("Error in training function" in r.getMessage()
                       for r in caplog.records) == logged
    finally:
        errors.removeHandler(caplog.handler)


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("sparse", [False, True])
def test_betas_reach_every_adam_optimizer(dataset: str, optimizer: str, sparse: bool) -> None:
    """train.betas (issue 18: SASRec's references use (0.9, 0.98)) reaches the dense optimizer
    and, with sparse tables, SparseAdam beside it; the default stays PyTorch's."""
    train = {"optimizer": optimizer, "betas": [0.9, 0.98], "sparse_embeddings": sparse}
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8}, "train": train})
    data = load_dataset(dataset)
    _, built = _objective(cfg, data)
    parts = built.parts if sparse else [built]
    assert [g["betas"] for p in parts for g in p.param_groups] == [(0.9, 0.98)] * len(parts)
    default = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                            "train": {"optimizer": optimizer}})
    assert make_optimizer(build_model(default, data), default.train).param_groups[0]["betas"] \
        == (0.9, 0.999)


@pytest.mark.parametrize(("train", "message"), [
    ({"optimizer": "sgd", "betas": [0.9, 0.98]}, "only adam and adamw use them"),
    ({"betas": [0.9, 1.0]}, r"train\.betas: each beta must be in \[0, 1\)"),
    ({"betas": [0.9]}, r"train\.betas"),
])
def test_bad_betas_are_named(dataset: str, train: dict, message: str) -> None:
    with pytest.raises(AdvrecError, match=message):
        build_config({"data": {"source": dataset}, "train": train})


def test_patience_counts_evaluations_not_epochs(dataset: str, tmp_path: Path) -> None:
    """Validated every 2nd epoch with patience 2, a run whose metric never moves (a learning
    rate far below float32's resolution) stops at its third evaluation: the first sets the
    best, the next two do not beat it. Counted in epochs it would stop at the second."""
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8},
                        "train": {"epochs": 20, "lr": 1e-30, "eval_every": 2, "patience": 2}})
    metrics = run_training(cfg, str(tmp_path / "run"), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history if "eval_s" in h] == [1, 3, 5]
    assert len(history) == 6 and history[-1]["stopped"] and metrics["best_epoch"] == 1


def test_a_dumped_sgd_config_validates_again(dataset: str) -> None:
    """Ray Train workers validate the dumped config again, betas included: an sgd run's default
    betas are no error there (every torchrec test with adagrad tables failed on it)."""
    cfg = build_config({"data": {"source": dataset}, "train": {"optimizer": "sgd"}})
    assert type(cfg).model_validate(cfg.model_dump()).train.betas == (0.9, 0.999)
