"""Tables backed by torchrec (`advrec.models.torchrec_tables`): every model of the zoo scores,
attacks and differentiates exactly as with its ``nn.Embedding`` tables of the same weights, and
a state dict of either backend loads into the other."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchrec")

from advrec.adversarial import AdversarialObjective
from advrec.config import build_config
from advrec.data import load_dataset
from advrec.models import build_model
from advrec.models.torchrec_tables import TorchrecEmbedding
from advrec.train.loop import attack_from_config
from advrec.train.tasks import make_loss, make_task
from zoo_models import MODELS


@pytest.mark.parametrize("name", list(MODELS))
def test_torchrec_tables_score_attack_and_differentiate_as_dense_ones(
        name: str, ctr_small: str, feature_options: dict) -> None:
    cfg = build_config({"data": {"source": ctr_small, **feature_options},
                        "model": {"name": name, "dim": 8, **MODELS[name]},
                        "adv": {"method": "pgd", "eps": 0.1, "steps": 2, "random_start": True},
                        "train": {"num_negatives": 2}})
    data = load_dataset(ctr_small)
    torch.manual_seed(0)
    dense = build_model(cfg, data).eval()  # no dropout: both see the same function
    torchrec = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"embeddings": "torchrec"})})
    twin = build_model(torchrec, data).eval()
    # every table torchrec's, but DeepFM's first-order weights: 1 wide, FBGEMM takes widths of 4k
    for table in twin.tables().values():
        assert isinstance(table, TorchrecEmbedding) == (table.embedding_dim % 4 == 0)
    assert twin.tables().keys() == dense.tables().keys()
    twin.load_state_dict(dense.state_dict())  # the same keys (strict): the same weights
    assert twin.state_dict().keys() == dense.state_dict().keys()

    batch = next(iter(make_task(cfg, data).batches(64, torch.Generator().manual_seed(0))))
    emb, twin_emb = dense.embed(batch), twin.embed(batch)
    assert emb.keys() == twin_emb.keys()
    for key in emb:
        torch.testing.assert_close(twin_emb[key], emb[key], rtol=0, atol=0)
    torch.testing.assert_close(twin.score(twin_emb, batch), dense.score(emb, batch))

    # the adversarial objective (PGD from a random start) and its gradients, table by table
    losses = []
    for model in (dense, twin):
        objective = AdversarialObjective(model, make_loss(cfg), attack_from_config(cfg.adv), lam=1.0)
        loss = objective(batch, adversarial=True, generator=torch.Generator().manual_seed(1))
        loss["loss"].backward()
        losses.append(loss["loss"].item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for key, table in dense.tables().items():
        torch.testing.assert_close(twin.tables()[key].weight.grad, table.weight.grad,
                                   rtol=1e-5, atol=1e-7)


def test_a_padding_row_is_zero_and_untrained() -> None:
    # SASRec's item table pads histories with its last row
    table = TorchrecEmbedding("item", 5, 3, std=0.1, padding_idx=4)
    ids = torch.tensor([[0, 4], [4, 2]])
    rows = table(ids)
    assert rows.shape == (2, 2, 3) and not rows[ids == 4].any()
    rows.sum().backward()
    assert not table.weight.grad[4].any() and table.weight.grad[0].any()


def test_torchrec_tables_are_initialised_as_dense_ones(ctr_small: str,
                                                      feature_options: dict) -> None:
    # each table's own init: xavier for DeepFM's fields, N(0, 1e-4) for its first-order weights
    models = {}
    for embeddings in ("dense", "torchrec"):
        cfg = build_config({"data": {"source": ctr_small, **feature_options},
                            "model": {"name": "deepfm", "dim": 16, "embeddings": embeddings},
                            "train": {"optimizer": "sgd"}})
        models[embeddings] = build_model(cfg, load_dataset(ctr_small))
    dense, twin = (m.tables() for m in models.values())
    assert dense.keys() == twin.keys()
    checked = 0
    for key, table in dense.items():
        if table.weight.numel() >= 1000:  # enough draws for a std within a few percent
            assert twin[key].weight.std().item() == pytest.approx(
                table.weight.std().item(), rel=0.1), key
            checked += 1
    assert checked >= 2
