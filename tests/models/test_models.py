import pytest
import torch
import torch.nn.functional as F

from advrec.data.features import FeatureSet, Field
from advrec.models import LOSSES, MF, DCNv2, DeepFM, MMoE, NeuMF, TwoTower
from advrec.models.base import Recommender
from advrec.models.deepfm import fm_interaction
from advrec.models.losses import MultiTaskLoss, bce, mse
from advrec.models.twotower import in_batch_logits

U, I, D, B, C = 7, 11, 8, 5, 3


def _features() -> dict[str, FeatureSet]:
    """Users: gender (categorical) and tags (multi-valued); items: year (bucketised)."""
    g = torch.Generator().manual_seed(1)
    tags = torch.randint(0, 4, (U, 3), generator=g)
    tags[0] = 0  # a user without any tag
    return {
        "user": FeatureSet([Field("gender", "single", 3), Field("tags", "multi", 4)],
                           torch.randint(0, 3, (U, 1), generator=g), {"tags": tags}),
        "item": FeatureSet([Field("year", "single", 5)], torch.randint(0, 5, (I, 1), generator=g),
                           {}),
    }


def make_model(name: str) -> Recommender:
    """Each pair/feature model of the zoo, tiny (SASRec has its own tests)."""
    torch.manual_seed(0)
    return {
        "mf": lambda: MF(U, I, D),
        "neumf": lambda: NeuMF(U, I, D, [16, 8]),
        "deepfm": lambda: DeepFM(U, I, _features(), D, [16, 8]),
        "dcnv2": lambda: DCNv2(U, I, _features(), D, 2, [16]),
        "twotower": lambda: TwoTower(U, I, _features(), D, [16, 8]),
        "mmoe": lambda: MMoE(U, I, _features(), D, 3, [16]),
    }[name]()


ZOO = ["mf", "neumf", "deepfm", "dcnv2", "twotower", "mmoe"]


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"user": torch.randint(U, (B,), generator=g), "item": torch.randint(I, (B, C), generator=g)}


@pytest.mark.parametrize("name", ZOO)
def test_embed_and_score_shapes(name: str) -> None:
    model = make_model(name)
    batch = _batch()
    emb = model.embed(batch)
    assert set(emb) == set(model.tables())
    for key, value in emb.items():
        width = 1 if key.endswith("_linear") else D  # DeepFM's first-order weights
        assert value.shape == ((B, width) if key.startswith("user") else (B, C, width)), key
    assert model.score(emb, batch).shape == ((B, C, 2) if name == "mmoe" else (B, C))


def test_feature_models_embed_every_field() -> None:
    model = make_model("deepfm")
    fields = {"user", "user_gender", "user_tags", "item", "item_year"}
    assert set(model.tables()) == fields | {f"{f}_linear" for f in fields}
    emb = model.embed(_batch())
    tags = model.users.ids_user_tags[_batch()["user"]]  # (B, 3)
    table = model.tables()["user_tags"].weight
    for row, tokens in enumerate(tags):
        present = tokens[tokens > 0]
        expected = table[present].mean(0) if present.numel() else torch.zeros(D)
        torch.testing.assert_close(emb["user_tags"][row], expected)  # mean of the tokens


def _loss(name: str, logits: torch.Tensor, loss: str) -> torch.Tensor:
    if name == "mmoe":
        labels = torch.stack([torch.ones_like(logits[..., 0]), torch.full_like(logits[..., 0], 4.0)], -1)
        return MultiTaskLoss([bce, mse], [1.0, 1.0])(logits, labels)
    return LOSSES[loss](logits)


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_forward_backward_reaches_every_parameter(name: str, loss: str) -> None:
    model = make_model(name)
    _loss(name, model(_batch()), loss).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if loss != "bce" and (pname.endswith("head.bias") or pname.startswith("user_linear")):
            continue  # BPR and softmax only see score differences: a shared bias cancels out
        if name == "mmoe" and pname.startswith("towers.0.2.bias") and loss != "bce":
            continue
        assert p.grad.abs().sum() > 0, pname


def test_fm_interaction_is_the_sum_of_pairwise_products() -> None:
    x = torch.randn(2, 4, 3)  # (B, F, d)
    pairs = sum((x[:, f] * x[:, g]).sum(-1) for f in range(4) for g in range(f + 1, 4))
    torch.testing.assert_close(fm_interaction(x), pairs)


def test_in_batch_logits_with_log_q_by_hand() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    items = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ids = torch.tensor([5, 7, 5])  # rows 0 and 2 share item 5: an accidental hit for each other
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.5]))
    got = in_batch_logits(users, items, ids, log_q)
    inf = float("-inf")
    # row i: item i first, then i+1, i+2 (mod 3); logit u·v - log Q(v); same item -> -inf
    expected = torch.tensor([
        [3.0 - log_q[0], 1.0 - log_q[1], inf],
        [2.0 - log_q[1], 2.0 - log_q[2], 0.0 - log_q[0]],
        [1.0 - log_q[2], inf, 2.0 - log_q[1]],
    ])
    torch.testing.assert_close(got, expected)
    # the softmax over a row: the positive against the corrected, de-duplicated negatives
    loss = LOSSES["softmax"](got)
    by_hand = -torch.stack([F.log_softmax(expected[i][expected[i] > inf], 0)[0] for i in range(3)]).mean()
    torch.testing.assert_close(loss, by_hand)


def test_two_tower_training_logits_are_in_batch_and_retrieval_ranks_every_item() -> None:
    model = make_model("twotower")
    users = torch.tensor([0, 1, 2, 3])
    batch = {"user": users, "item": torch.tensor([[1], [2], [3], [1]]),
             "log_q": torch.zeros(4)}
    logits = model(batch)
    assert logits.shape == (4, 4)
    assert torch.isinf(logits[0, 3]) and torch.isinf(logits[3, 1])  # item 1 twice
    plain = model.score_candidates({"user": users}, torch.tensor([[1], [2], [3], [1]]))
    torch.testing.assert_close(logits[:, 0], plain[:, 0])  # zero log Q: the positive's logit
    full = model.rank_scores({"user": users})
    generic = Recommender.rank_scores(model, {"user": users}, max_pairs=8)
    torch.testing.assert_close(full, generic)


def test_mf_score_is_dot_product() -> None:
    model = MF(U, I, D)
    batch = _batch()
    expected = torch.einsum("bd,bcd->bc", model.user.weight[batch["user"]],
                            model.item.weight[batch["item"]])
    torch.testing.assert_close(model(batch), expected)


@pytest.mark.parametrize("name", ["mf", "neumf", "deepfm", "dcnv2", "twotower"])
def test_rank_scores_match_candidate_scoring(name: str) -> None:
    model = make_model(name)
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
