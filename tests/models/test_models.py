import pytest
import torch

from advrec.config import ModelConfig
from advrec.models import LOSSES, MF, NeuMF, build_model
from advrec.models.base import Recommender

U, I, D, B, C = 7, 11, 8, 5, 3


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"user": torch.randint(U, (B,), generator=g), "item": torch.randint(I, (B, C), generator=g)}


@pytest.mark.parametrize("name", ["mf", "neumf"])
def test_embed_and_score_shapes(name: str) -> None:
    model = build_model(ModelConfig(name=name, dim=D, mlp_layers=[16, 8]), U, I)
    batch = _batch()
    emb = model.embed(batch)
    assert set(emb) == set(model.tables())
    for key, value in emb.items():
        assert value.shape == ((B, D) if key.startswith("user") else (B, C, D))
    assert model.score(emb, batch).shape == (B, C)


@pytest.mark.parametrize("name", ["mf", "neumf"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_forward_backward_reaches_every_parameter(name: str, loss: str) -> None:
    model = build_model(ModelConfig(name=name, dim=D, mlp_layers=[16, 8]), U, I)
    LOSSES[loss](model(_batch())).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if pname == "head.bias" and loss != "bce":
            continue  # BPR and softmax only see score differences: a shared bias cancels out
        assert p.grad.abs().sum() > 0, pname


def test_mf_score_is_dot_product() -> None:
    model = MF(U, I, D)
    batch = _batch()
    expected = torch.einsum("bd,bcd->bc", model.user.weight[batch["user"]],
                            model.item.weight[batch["item"]])
    torch.testing.assert_close(model(batch), expected)


@pytest.mark.parametrize("model", [MF(U, I, D), NeuMF(U, I, D, [16, 8])], ids=["mf", "neumf"])
def test_rank_scores_match_candidate_scoring(model: Recommender) -> None:
    users = torch.tensor([0, 3, 6])
    full = model.rank_scores({"user": users})
    assert full.shape == (3, I)
    generic = Recommender.rank_scores(model, {"user": users}, max_pairs=12)  # 4 items a chunk
    torch.testing.assert_close(full, generic)


def test_losses_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    bpr = -(torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.sigmoid(torch.tensor(1.0)))) / 2
    torch.testing.assert_close(LOSSES["bpr"](logits), bpr)
    soft = -torch.log_softmax(logits, 1)[0, 0]
    torch.testing.assert_close(LOSSES["softmax"](logits), soft)
