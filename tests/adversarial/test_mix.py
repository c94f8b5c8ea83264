"""Several adversaries in one objective (``adv.mix``): ``L + λ₁·L(x'₁) + λ₂·L(x'₂)``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advrec.adversarial import AdversarialObjective, Attack
from advrec.config import load_config
from advrec.data import prepare
from advrec.errors import AdvrecError
from advrec.models import LOSSES
from advrec.models.sasrec import SASRec
from advrec.train import run_training

N, D, L = 30, 8, 6


def _batch() -> dict[str, torch.Tensor]:
    """Left-padded histories (12, L) with a next item and one negative at each real position."""
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(2, L + 1, (12,), generator=g)
    real = torch.arange(L).flip(0) < lengths.unsqueeze(1)
    seq = torch.where(real, torch.randint(N, (12, L), generator=g), N)
    target = torch.where(real, torch.randint(N, (12, L), generator=g), N)
    negative = torch.randint(N, (12, L), generator=g)
    return {"seq": seq, "mask": real,
            "item": torch.stack([target.clamp(max=N - 1), negative], -1)}


def _objective(attack: Attack, lam: float,
               mix: list[tuple[Attack, float, str]] | None = None) -> AdversarialObjective:
    torch.manual_seed(0)  # the same weights for every objective
    model = SASRec(num_users=12, num_items=N, dim=D, max_len=L, layers=1, heads=1, dropout=0.0)
    return AdversarialObjective(model, LOSSES["bce"], attack, lam=lam, mix=mix or [])


def test_the_objective_adds_each_adversarys_lambda_times_its_own_loss() -> None:
    batch = _batch()
    swaps, fgm = Attack("jsma-items", 0.0, budget=2), Attack("fgm", 0.3, relative=True)
    alone = [_objective(a, 1.0)(batch, adversarial=True) for a in (swaps, fgm)]
    mixed = _objective(swaps, 0.5, [(fgm, 0.2, "item")])
    out = mixed(batch, adversarial=True)
    # each adversary's loss is the one it has alone (FGM on the item rows: all there are)
    torch.testing.assert_close(out["clean"], alone[0]["clean"])
    expected = alone[0]["clean"] + 0.5 * alone[0]["adv"] + 0.2 * alone[1]["adv"]
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["adv"], (0.5 * alone[0]["adv"] + 0.2 * alone[1]["adv"]) / 0.7)
    out["loss"].backward()  # one backward reaches every parameter
    assert all(p.grad is not None for p in mixed.model.parameters())
    # an adversary at λ = 0 adds nothing
    quiet = _objective(swaps, 0.5, [(fgm, 0.0, "item")])(batch, adversarial=True)
    torch.testing.assert_close(quiet["loss"], alone[0]["clean"] + 0.5 * alone[0]["adv"])


def test_clean_epochs_skip_every_adversary() -> None:
    out = _objective(Attack("fgm", 0.3), 1.0, [(Attack("jsma-items", 0.0), 1.0, "all")])(
        _batch(), adversarial=False)
    assert "adv" not in out
    torch.testing.assert_close(out["loss"], out["clean"])


@pytest.mark.parametrize("overrides, error", [
    (["model.name=mf", "adv.mix=[{method: jsma-items}]"], "adv.mix[0].method=jsma-items"),
    (["model.name=sasrec", "adv.mix=[{method: none}]"], "adv.mix[0].method=none"),
    (["model.name=sasrec", "adv.mix=[{method: fgm, lambda: -1}]"], "adv.mix[0].lambda"),
    (["model.name=sasrec", "model.max_len=5", "adv.method=jsma-items", "adv.budget=6"],
     "adv.budget=6: above model.max_len=5"),
    (["model.name=sasrec", "adv.mix=[{method: fgm}, {method: fgm, similarity: 0.5}]"],
     "adv.mix[1]: similarity=0.5: only method=jsma-items"),
    (["model.name=sasrec", "model.dim=8", "adv.mix=[{method: fgm}, {method: jsma, l0: 9}]"],
     "adv.mix[1].l0=9"),
    (["model.name=sasrec", "adv.mix=[{method: fgm, lamda: 1}]"], "lamda"),
])
def test_bad_mixes_are_refused_naming_the_entry(overrides: list[str], error: str) -> None:
    with pytest.raises(AdvrecError, match=error.replace("[", r"\[")):
        load_config(None, ["data.source=unused", *overrides])


@pytest.fixture(scope="module")
def loo(udata_small: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("mix") / "loo"
    prepare(str(udata_small), "movielens", str(out), split="loo", seed=0)
    return str(out)


def test_training_mixes_embedding_fgm_and_item_swaps(loo: str, tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.source={loo}", "model.name=sasrec", "model.dim=16",
                             "model.max_len=20", "adv.method=fgm", "adv.eps=0.1",
                             "adv.relative=true", "adv.start_epoch=1",
                             "adv.mix=[{method: jsma-items, lambda: 0.5, budget: 1}]",
                             "train.epochs=2", "train.batch_size=32", "train.loss=bce",
                             "eval.ks=[10]"])
    run_training(cfg, str(tmp_path / "run"), progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "adv" not in history[0] and history[1]["adv"] > 0  # the warm-up, then both
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert [(a.method, a.lam) for _, a in saved.adv.adversaries()] == [("fgm", 1.0),
                                                                       ("jsma-items", 0.5)]
