"""JSMA on user profiles (`advrec.metrics.profile_attack`): each user's feature fields changed to
demote their held-out items (two-tower's ranking) or to promote target items (any feature
model, `advrec evaluate --attack jsma-fields [--target-items ...]`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from advrec.cli import main
from advrec.config import load_config
from advrec.data import load_dataset
from advrec.data.features import FeatureSet, Field
from advrec.metrics.attack_goal import RankingGoal
from advrec.metrics.profile_attack import AttackedProfiles
from advrec.models.deepfm import DeepFM
from advrec.models.fields import FieldModel
from advrec.train import load_model, read_run, run_training


def _deepfm() -> DeepFM:
    """6 users with a gender (2 values) and an age bucket (4), 9 items with a year (3)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    users = torch.tensor([[1, 1], [2, 2], [1, 3], [2, 4], [1, 2], [2, 1]])  # 0 and 3 differ
    features = {"user": FeatureSet([Field("gender", "single", 3), Field("age", "single", 5)],
                                   users, {}),
                "item": FeatureSet([Field("year", "single", 4)],
                                   torch.randint(1, 4, (9, 1), generator=g), {})}
    return DeepFM(6, 9, features, dim=4, mlp_layers=[8]).eval()


def test_a_profile_in_the_batch_is_looked_up_instead_of_the_users_own() -> None:
    model = _deepfm()
    assert model.user_fields() == ["user_gender", "user_age"]
    other = model.users.values(torch.tensor([3]))
    batch = {"user": torch.tensor([0]), "item": torch.tensor([[2, 5]])}
    own, theirs = model.embed(batch), model.embed({**batch, "user": torch.tensor([3])})
    carried = model.embed({**batch, **other})
    for key in model.feature_fields()["user_age"] + model.feature_fields()["user_gender"]:
        torch.testing.assert_close(carried[key], theirs[key])  # the row and DeepFM's weight
    for key in ("user", "user_linear", "item", "item_year"):
        torch.testing.assert_close(carried[key], own[key])  # the id and the items: unchanged
    # and every item is scored from the carried profile, as user 3's fields would score it
    scores = model.rank_scores({"user": torch.tensor([0]), **other})
    assert scores.shape == (1, 9) and not torch.allclose(scores, model.rank_scores(
        {"user": torch.tensor([0])}))


def _log_probs(model: FieldModel, users: torch.Tensor, profile: dict | None) -> torch.Tensor:
    """(B, N) every item's log-softmax for ``users`` from their ``profile`` (None: their own)."""
    with torch.no_grad():
        return model.rank_scores({"user": users, **(profile or {})}).log_softmax(-1)


@pytest.fixture(scope="module")
def twotower_run(atomic_small: Path, feature_options: dict,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-tower trained clean on the small log with its users' age, gender and occupation
    (and the items' year and genres): it ranks well above chance (test NDCG@10 ~0.09)."""
    run = tmp_path_factory.mktemp("profile") / "twotower"
    cfg = load_config(None, [f"data.source={atomic_small}", "data.format=recbole",
                             "model.name=twotower", "model.dim=16", "model.mlp_layers=[32]",
                             "train.epochs=8", "train.lr=0.01",
                             *(f"data.{k}={json.dumps(v)}" for k, v in feature_options.items())])
    run_training(cfg, str(run), progress=False)
    return run


def _loaded(run: Path) -> tuple[FieldModel, object]:
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    model = load_model(str(run / "checkpoint" / "model.pt"), cfg, data)[0]
    return model.eval(), data


@pytest.mark.parametrize("budget", [1, 2])
def test_untargeted_changes_at_most_budget_fields_and_demotes_the_held_out_items(
        twotower_run: Path, budget: int) -> None:
    model, data = _loaded(twotower_run)
    profiles = AttackedProfiles(model, RankingGoal(data), budget, "test", max_pairs=20_000)
    users = torch.arange(model.num_users)
    changed = profiles.values(users)
    own = model.users.values(users)
    # single-valued fields only (age, gender, occupation): a change is a different value
    moved = torch.stack([changed[f] != own[f] for f in own], 1)  # (U, fields)
    assert (moved.sum(1) <= budget).all() and moved.any() and (moved.sum(1) == budget).any()
    assert all((changed[f] > 0).all() for f in own)  # never "missing"
    held = data.positives("test")
    rows = torch.repeat_interleave(users, held[0].diff())
    before, after = (F.nll_loss(_log_probs(model, users, p)[rows], held[1], reduction="none")
                     for p in (None, changed))
    assert (after - before).mean() > 0  # the held-out items' cross-entropy rose


def test_targeted_raises_the_targets_log_probability(twotower_run: Path) -> None:
    model, data = _loaded(twotower_run)
    target = torch.tensor([7, 300])
    profiles = AttackedProfiles(model, RankingGoal(data, target), 2, "test")
    users = torch.arange(model.num_users)
    before, after = (_log_probs(model, users, p)[:, target].sum(1)
                     for p in (None, profiles.values(users)))
    assert (after - before).mean() > 0 and ((after - before) > 0).float().mean() > 0.5
    # each profile is attacked once: asking again returns the kept one
    first = profiles.values(users[:5])
    assert all(torch.equal(first[f], profiles.values(users[:5])[f]) for f in first)


def test_two_towers_budget_curve_and_its_targeted_one(twotower_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(twotower_run, run)
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "jsma-fields",
                 "--budget", "0,2"]) == 0
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "jsma-fields",
                 "--budget", "0,1", "--target-items", "7,300"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    points = curve["jsma-fields"]["budget"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert points["0"]["ndcg@10"] == pytest.approx(test["ndcg@10"])  # budget 0: clean
    assert points["2"]["ndcg@10"] < points["0"]["ndcg@10"]
    targeted = curve["jsma-fields:targeted"]
    assert targeted["targets"] == ["7", "300"] and sorted(targeted["budget"]) == ["0", "1"]
    assert all("target/hr@50" in p for p in targeted["budget"].values())
    # the targets' T-HR is plotted for the curve that has it (the untargeted one has not)
    assert main(["plot", str(run), "--output", str(tmp_path / "thr.png"), "--metric",
                 "target/hr@50"]) == 0


def test_a_profile_attack_needs_user_fields(tmp_path: Path, atomic_small: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    # the users' fields excluded: the items still have theirs, the users have no profile
    run = tmp_path / "run"
    assert main(["train", "--output", str(run), "--quiet", f"data.source={atomic_small}",
                 "data.format=recbole", "model.name=twotower", "model.dim=8",
                 "model.mlp_layers=[8]", "train.epochs=1",
                 'data.exclude_features=["zip_code","movie_title","age","gender","occupation"]',
                 'data.numeric_features=["release_year"]']) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--attack", "jsma-fields"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--attack jsma-fields on twotower (it ranks items) changes the users' profiles" in err
    assert "has no user features" in err and "\n" not in err
    assert not (run / "robustness.json").exists()
