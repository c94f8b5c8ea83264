"""Every model of the zoo trains under every adversary on a small synthetic log with side
features."""

from __future__ import annotations

import pytest
import torch

from advrec.adversarial import AdversarialObjective
from advrec.config import build_config
from advrec.data import load_dataset
from advrec.models import build_model
from advrec.train.loop import attack_from_config, train_epoch
from advrec.train.optim import make_optimizer
from advrec.train.tasks import make_loss, make_task
from zoo_models import MODELS

METHODS = ["random", "fgsm", "fgm", "pgd", "jsma"]
EPS = 0.1


def _setup(name: str, method: str, source: str, feature_options: dict, **train: object):
    cfg = build_config({
        "data": {"source": source, **feature_options},
        "model": {"name": name, "dim": 8, **MODELS[name]},
        "adv": {"method": method, "eps": EPS, "steps": 2},
        "train": {"batch_size": 512, "lr": 0.01, "num_negatives": 2, **train},
    })
    data = load_dataset(source)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0)
    return cfg, model, objective, make_task(cfg, data)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MODELS))
def test_perturbation_respects_the_budget(name: str, method: str, ctr_small: str,
                                          feature_options: dict) -> None:
    _, model, objective, task = _setup(name, method, ctr_small, feature_options)
    g = torch.Generator().manual_seed(0)
    batch = next(iter(task.batches(64, g)))
    emb = model.embed(batch)
    delta = objective._delta(emb, list(emb), None, batch, g, objective.attack)
    assert set(delta) == set(emb)  # every table's rows, features included, are attacked
    for key, d in delta.items():
        assert d.shape == emb[key].shape
        linf = method in ("fgsm", "jsma")
        size = d.abs().amax(-1) if linf else d.norm(dim=-1)  # L-inf / L2 per row
        assert (size <= EPS * (1 + 1e-5)).all(), key
        if method == "jsma":  # dim 8: one coordinate per row (a tenth of 8, at least 1)
            assert ((d != 0).sum(-1) <= 1).all(), key
        assert size.max() > EPS / 10, key  # and it moves the rows


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MODELS))
def test_two_adversarial_epochs_lower_the_training_loss(name: str, method: str, ctr_small: str,
                                                        feature_options: dict) -> None:
    _two_epochs_lower_the_loss(*_setup(name, method, ctr_small, feature_options))


@pytest.mark.parametrize("name", list(MODELS))
def test_sparse_embedding_gradients_train_every_model(name: str, ctr_small: str,
                                                      feature_options: dict) -> None:
    cfg, model, objective, task = _setup(name, "pgd", ctr_small, feature_options,
                                         sparse_embeddings=True)
    _two_epochs_lower_the_loss(cfg, model, objective, task)
    # the last step's table gradients were sparse: only the batch's rows
    for key, table in model.tables().items():
        assert table.weight.grad is not None and table.weight.grad.is_sparse, key
        touched = table.weight.grad.coalesce().indices().numel()
        assert 0 < touched < table.num_embeddings or table.num_embeddings < 64, key


def _two_epochs_lower_the_loss(cfg, model, objective, task) -> None:
    optimizer = make_optimizer(model, cfg.train)

    def loss() -> float:
        # the clean + adversarial objective over a fixed draw of the training batches
        g = torch.Generator().manual_seed(1)
        values = [objective(b, adversarial=True, generator=g)["loss"].item()
                  for b in task.batches(cfg.train.batch_size, g, shuffle=False)]
        return sum(values) / len(values)

    before = loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        train_epoch(objective, optimizer, task, cfg.train.batch_size, adversarial=True, generator=g)
    assert loss() < before
