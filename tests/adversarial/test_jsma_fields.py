"""JSMA on feature fields (jsma-fields): changing a few categorical fields of each example of a
feature model, in training (`adv.method=jsma-fields`) and in evaluation
(`advrec evaluate --attack jsma-fields`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from advrec.adversarial import AdversarialObjective, Attack
from advrec.adversarial.jsma_fields import field_rows, flip_fields
from advrec.cli import main
from advrec.config import load_config
from advrec.data.features import FeatureSet, Field
from advrec.models import LOSSES
from advrec.models.deepfm import DeepFM
from advrec.train import run_training

D, B = 4, 24
VOCAB = {"user_a": 5, "item_b": 6, "item_g": 7}  # id 0 is no value in each
SLOTS = {"user_a": 1, "item_b": 2, "item_g": 1}  # a user field, an item field of 2 candidates


def _linear_case():
    """Fields whose loss is linear in their rows: example b's is Σ_slots w_bs · c_b · row_s.
    Linear, a change's first-order gain is exactly what it changes the loss by, for a flip
    (e_v − e_old) as for a token added ((e_v − m)/(n + 1)) or dropped ((m − e_t)/(n − 1)).
    The slot is brute force's too when ‖g_s‖ = w_bs ‖c_b‖ orders the slots as their best gains
    do: the weights are 100× apart, in an order drawn per example (so each kind of field is
    the most salient somewhere), and no single-valued slot holds its most damaging value."""
    g = torch.Generator().manual_seed(7)
    catalogues = {f: torch.randn(v, D, generator=g, dtype=torch.float64)
                  for f, v in VOCAB.items()}
    c = torch.randn(B, D, generator=g, dtype=torch.float64)
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(B)])  # (B, 4 slots)
    weights = 100.0 ** order.to(torch.float64)
    values = {}
    for f in ("user_a", "item_b"):
        ids = torch.randint(1, VOCAB[f], (B, SLOTS[f]), generator=g)
        best = (c @ catalogues[f][1:].T).argmax(1, keepdim=True) + 1  # (B, 1)
        values[f] = torch.where(ids == best, best % (VOCAB[f] - 1) + 1, ids)
    # 0 to 3 distinct genres per example, left-aligned, 0-padded
    tokens = torch.stack([torch.randperm(VOCAB["item_g"] - 1, generator=g)[:3] + 1
                          for _ in range(B)])
    count = torch.randint(0, 4, (B, 1), generator=g)
    values["item_g"] = torch.where(torch.arange(3) < count, tokens, 0).unsqueeze(1)

    def rows(vals: dict[str, torch.Tensor]) -> torch.Tensor:  # (B, 4 slots, D)
        return torch.cat([field_rows(vals[f], catalogues[f]) for f in VOCAB], 1)

    def losses(vals: dict[str, torch.Tensor]) -> torch.Tensor:  # (B,)
        return torch.einsum("bsd,bs,bd->b", rows(vals), weights, c)

    def grad_fn(field_rows_: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = {f: r.detach().requires_grad_(True) for f, r in field_rows_.items()}
        loss = torch.einsum("bsd,bs,bd->", torch.cat([x[f] for f in VOCAB], 1), weights, c)
        return dict(zip(x, torch.autograd.grad(loss, list(x.values()))))

    return values, catalogues, losses, grad_fn


def _edits(vals: dict[str, torch.Tensor], b: int):
    """Every single change of example ``b``: each slot of each field, each value (a flip), or
    each token added or dropped; yields (name, the values after it)."""
    for f, v in vals.items():
        for k in range(v.shape[1]):
            if v.dim() == 2:  # single-valued: every other real value
                for new in range(1, VOCAB[f]):
                    if new != v[b, k]:
                        out = {**vals, f: v.clone()}
                        out[f][b, k] = new
                        yield (f, k, "flip", new), out
                continue
            wide = torch.nn.functional.pad(v, (0, 1))
            present = set(wide[b, k].tolist()) - {0}
            for t in range(1, VOCAB[f]):
                out = {**vals, f: wide.clone()}
                if t not in present:
                    out[f][b, k, int((wide[b, k] == 0).nonzero()[0])] = t
                    yield (f, k, "add", t), out
                elif len(present) >= 2:
                    out[f][b, k, int((wide[b, k] == t).nonzero()[0])] = 0
                    yield (f, k, "drop", t), out


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, slots) whether each slot's value differs (as token multisets where multi-valued)."""
    out = []
    for f, v in before.items():
        if v.dim() == 2:
            out.append(after[f] != v)
            continue
        wide = torch.nn.functional.pad(v, (0, after[f].shape[-1] - v.shape[-1]))
        out.append((after[f].sort(-1).values != wide.sort(-1).values).any(-1))
    return torch.cat(out, 1)


def test_budget_one_makes_the_change_brute_force_finds() -> None:
    values, catalogues, losses, grad_fn = _linear_case()
    attacked = flip_fields(values, catalogues, grad_fn, budget=1)
    assert attacked["item_g"].shape == (B, 1, 4)  # a place for an added token
    clean = losses(values)
    kinds = set()
    for b in range(B):
        # brute force: every slot of every field, every value (or token added or dropped)
        gains = {name: float(losses(after)[b] - clean[b]) for name, after in _edits(values, b)}
        best = max(gains, key=gains.__getitem__)
        assert gains[best] > 0
        kinds.add(best[2])
        expected = dict(_edits(values, b))[best]
        assert not _changed(expected, attacked)[b].any(), (b, best)
    assert kinds == {"flip", "add", "drop"}  # every kind of change was brute force's best


def test_budget_zero_changes_nothing_and_needs_no_gradient() -> None:
    values, catalogues, _, _ = _linear_case()

    def never(rows: dict) -> dict:
        raise AssertionError("budget 0 needs no gradient")

    assert not _changed(values, flip_fields(values, catalogues, never, budget=0)).any()


@pytest.mark.parametrize("budget", [2, 4])
def test_each_round_changes_one_new_slot_on_a_fresh_gradient(budget: int) -> None:
    values, catalogues, losses, grad_fn = _linear_case()
    calls = []

    def counting(rows: dict) -> dict:
        calls.append(1)
        return grad_fn(rows)

    init = grad_fn({f: field_rows(v, catalogues[f]) for f, v in values.items()})
    attacked = flip_fields(values, catalogues, counting, budget, init_grad=init)
    assert len(calls) == budget - 1  # the first round's gradient was given
    assert all(torch.equal(a, b) for a, b in zip(
        attacked.values(), flip_fields(values, catalogues, grad_fn, budget).values()))
    changed = _changed(values, attacked)
    assert (changed.sum(1) <= budget).all() and (changed.sum(1) == budget).float().mean() > 0.5
    assert (losses(attacked) > losses(values)).all()  # linear: every change raised it


def _features() -> dict[str, FeatureSet]:
    """Side features of 6 users (gender, age bucket) and 9 items (year, 1-3 genres of 5)."""
    g = torch.Generator().manual_seed(0)
    genres = torch.stack([torch.randperm(5, generator=g)[:3] + 1 for _ in range(9)])
    genres[torch.arange(9) % 3 == 0, 1:] = 0
    genres[torch.arange(9) % 3 == 1, 2:] = 0
    return {
        "user": FeatureSet([Field("gender", "single", 3), Field("age", "single", 5)],
                           torch.randint(1, 3, (6, 2), generator=g), {}),
        "item": FeatureSet([Field("year", "single", 4), Field("genre", "multi", 6)],
                           torch.randint(1, 4, (9, 1), generator=g), {"genre": genres}),
    }


def _deepfm() -> DeepFM:
    torch.manual_seed(0)
    return DeepFM(6, 9, _features(), dim=D, mlp_layers=[8])


def _labelled_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    users, items = torch.arange(6).repeat(6), torch.arange(9).repeat(4)
    return {"user": users, "item": items.unsqueeze(1),
            "label": torch.randint(0, 2, (36, 1), generator=g).float()}


def test_the_model_names_its_fields_and_looks_changed_values_up_as_embed_does() -> None:
    model, batch = _deepfm(), _labelled_batch()
    fields = model.feature_fields()
    assert fields == {"user_gender": ["user_gender", "user_gender_linear"],
                      "user_age": ["user_age", "user_age_linear"],
                      "item_year": ["item_year", "item_year_linear"],
                      "item_genre": ["item_genre", "item_genre_linear"]}  # no id field
    emb, values = model.embed(batch), model.field_values(batch)
    assert values["user_age"].shape == (36, 1) and values["item_genre"].shape == (36, 1, 3)
    looked_up = model.embed_fields(values)
    rows = model.field_rows(emb)
    for field, keys in fields.items():
        catalogue = model.field_catalogue(field, torch.device("cpu"))
        assert catalogue.shape[1] == D + 1  # the row and the first-order weight
        torch.testing.assert_close(field_rows(values[field], catalogue), rows[field])
        for key in keys:
            torch.testing.assert_close(looked_up[key], emb[key])
    torch.testing.assert_close(model.key_rows(rows), {k: emb[k] for ks in fields.values()
                                                      for k in ks})


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_the_objective_adds_lambda_times_the_loss_of_the_changed_fields(budget: int) -> None:
    model, batch = _deepfm().train(), _labelled_batch()
    objective = AdversarialObjective(model, LOSSES["bce"], Attack("jsma-fields", 0.0,
                                                                  budget=budget), lam=0.5)
    changed = _changed(model.field_values(batch), objective.flipped_fields(batch))
    assert (changed.sum(1) <= budget).all() and changed.any()
    out = objective(batch, adversarial=True)
    assert out["adv"] > out["clean"]  # dropout 0: the changes raised the training loss
    torch.testing.assert_close(out["loss"], out["clean"] + 0.5 * out["adv"])
    out["loss"].backward()
    # the changed values' rows are looked up from the tables: L(x') trains them too
    assert all(p.grad is not None for p in model.parameters())


def test_the_attack_raises_each_examples_loss_in_an_eval_model() -> None:
    model, batch = _deepfm().eval(), _labelled_batch()
    objective = AdversarialObjective(model, LOSSES["bce"], Attack("jsma-fields", 0.0, budget=2),
                                     lam=1.0)

    def row_losses(values: dict | None) -> torch.Tensor:
        with torch.no_grad():
            emb = model.embed(batch)
            if values is not None:
                emb = {**emb, **model.embed_fields(values)}
            return LOSSES["bce"](model.score(emb, batch), batch["label"], rows=True)

    with torch.no_grad():  # as an evaluation calls it
        flipped = objective.flipped_fields(batch)
    rise = row_losses(flipped) - row_losses(None)
    assert rise.mean() > 0 and (rise >= -1e-6).float().mean() > 0.9


def test_item_fields_of_several_candidates_are_slots_of_their_own() -> None:
    model = _deepfm().eval()
    batch = {"user": torch.arange(6), "item": torch.arange(9)[:6].unsqueeze(1).repeat(1, 3),
             "label": torch.ones(6, 3)}
    objective = AdversarialObjective(model, LOSSES["bce"], Attack("jsma-fields", 0.0, budget=5),
                                     lam=1.0)
    flipped = objective.flipped_fields(batch)
    assert flipped["item_year"].shape == (6, 3)
    # 2 user fields + 3 candidates × 2 item fields = 8 slots; 5 rounds change at most 5
    changed = _changed(model.field_values(batch), flipped)
    assert changed.shape == (6, 8) and (changed.sum(1) <= 5).all() and changed[:, 4:].any()


@pytest.fixture(scope="module")
def deepfm_run(ctr_small: str, feature_options: dict,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch DeepFM run trained against jsma-fields (2 fields per example) on the small
    CTR log with ml-100k-like side features (age, gender, occupation; year, genres)."""
    run = tmp_path_factory.mktemp("jsma-fields") / "run"
    cfg = load_config(None, [f"data.source={ctr_small}", "model.name=deepfm", "model.dim=8",
                             "model.mlp_layers=[16]", "adv.method=jsma-fields", "adv.budget=2",
                             "train.epochs=2", "train.batch_size=256",
                             *(f"data.{k}={json.dumps(v)}" for k, v in feature_options.items())])
    run_training(cfg, str(run), progress=False)
    return run


def test_training_against_jsma_fields_and_its_budget_curve(deepfm_run: Path,
                                                           tmp_path: Path) -> None:
    history = json.loads((deepfm_run / "history.json").read_text())
    assert len(history) == 2 and all(math.isfinite(h["loss"]) and h["adv"] > h["clean"]
                                     for h in history)
    run = tmp_path / "run"
    shutil.copytree(deepfm_run, run)
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "fgm,jsma-fields",
                 "--eps", "0,0.5", "--budget", "0,1,3"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert sorted(curve) == ["fgm", "jsma-fields"] and sorted(curve["fgm"]) == ["0.0", "0.5"]
    points = curve["jsma-fields"]["budget"]
    assert sorted(points) == ["0", "1", "3"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    for metric in ("auc", "logloss", "gauc"):
        assert points["0"][metric] == pytest.approx(test[metric])  # budget 0: the clean model
    assert points["3"]["auc"] < points["1"]["auc"] < points["0"]["auc"]
    assert points["3"]["logloss"] > points["0"]["logloss"]
    assert main(["plot", str(run), "--output", str(tmp_path / "plot.png")]) == 0
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_targeted_it_changes_each_users_profile_toward_the_targets(deepfm_run: Path,
                                                                    tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(deepfm_run, run)
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "jsma-fields",
                 "--budget", "0,2", "--target-items", "7,300"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert sorted(curve) == ["jsma-fields:targeted"] and curve[
        "jsma-fields:targeted"]["targets"] == ["7", "300"]
    points = curve["jsma-fields:targeted"]["budget"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert points["0"]["auc"] == pytest.approx(test["auc"])
    # the test examples are scored with their users' changed profiles: the AUC moves
    assert points["2"]["auc"] != pytest.approx(points["0"]["auc"], abs=1e-6)
    assert {"target/hr@50", "target/ndcg@50"} <= points["2"].keys()


def test_two_ray_train_workers_train_against_it_and_share_its_curve(
        ctr_small: str, feature_options: dict, tmp_path: Path, ray_local: None) -> None:
    # training: the objective (field changes included) under DDP on 2 Ray Train workers, for
    # MMoE (its loss: the click's BCE and the rating's MSE); evaluation: each worker attacks and
    # scores its share of the test rows, and the curve is one process's
    shared = tmp_path / "shared"
    assert main(["train", "--output", str(shared), "--quiet", f"data.source={ctr_small}",
                 "model.name=mmoe", "model.dim=8", "model.mlp_layers=[16]", "model.experts=2",
                 "adv.method=jsma-fields", "train.epochs=1", "train.batch_size=256",
                 "scaling.num_workers=2",
                 *(f"data.{k}={json.dumps(v)}" for k, v in feature_options.items())]) == 0
    assert json.loads((shared / "history.json").read_text())[0]["adv"] > 0
    alone = tmp_path / "alone"
    shutil.copytree(shared, alone)
    for where, workers in ((shared, "2"), (alone, "0")):
        for targets in ([], ["--target-items", "7,300"]):  # examples' fields; users' profiles
            assert main(["evaluate", "--run", str(where), "--quiet", "--attack", "jsma-fields",
                         "--budget", "0,2", "--workers", workers, *targets]) == 0
    two, one = (json.loads((where / "robustness.json").read_text())["jsma-fields"]["budget"]
                for where in (shared, alone))
    # the targeted curve too: each worker attacks the profiles of the users it ranks and of
    # its examples' users, and the points are one process's
    two_t, one_t = (json.loads((where / "robustness.json").read_text())[
        "jsma-fields:targeted"]["budget"]["2"] for where in (shared, alone))
    assert two_t.keys() == one_t.keys() >= {"click/auc", "target/hr@50"}
    for metric, value in one_t.items():
        assert two_t[metric] == pytest.approx(value, abs=1e-6), metric
    # the attack raises the weighted sum of both losses: after one epoch the rating's MSE is
    # most of it (the click's BCE is still log 2), and the rating's error is what grows
    assert two["2"]["rating/rmse"] > two["0"]["rating/rmse"]
    for budget in ("0", "2"):
        for metric in ("click/auc", "click/gauc", "rating/rmse"):
            assert two[budget][metric] == pytest.approx(one[budget][metric], abs=1e-6), (
                budget, metric)
