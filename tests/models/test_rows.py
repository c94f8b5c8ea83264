"""`Recommender.rows`, which ``adv.schedule=accumulate``'s δ memory is indexed by: for every
zoo model, each `embed` key's vectors are the named table's rows at the given ids (a pooled
multi-valued field's are one per user or item)."""

from __future__ import annotations

import pytest
import torch

from advrec.config import build_config
from advrec.data import load_dataset
from advrec.models import build_model
from advrec.train.tasks import make_task
from zoo_models import MODELS


@pytest.mark.parametrize("name", list(MODELS))
def test_rows_name_the_table_rows_embed_looked_up(name: str, ctr_small: str,
                                                  feature_options: dict) -> None:
    cfg = build_config({"data": {"source": ctr_small, **feature_options},
                        "model": {"name": name, "dim": 8, **MODELS[name]}})
    data = load_dataset(ctr_small)
    torch.manual_seed(0)
    model = build_model(cfg, data)
    batch = next(iter(make_task(cfg, data).batches(32, torch.Generator().manual_seed(0))))
    emb, rows, tables = model.embed(batch), model.rows(batch), model.tables()
    assert rows.keys() == emb.keys()
    pooled = 0
    for key, (table, ids, count) in rows.items():
        assert ids.shape == emb[key].shape[:-1] and int(ids.max()) < count, key
        if table in tables:
            assert tables[table].num_embeddings == count
            assert torch.equal(tables[table](ids), emb[key]), key
        else:  # a multi-valued field: one vector per user or item of the batch
            side = table.split("/")[1]
            assert torch.equal(ids, batch[side] if side == "item" else batch["user"]), key
            pooled += 1
    assert pooled == (2 * 1 if name == "deepfm" else 1 if name in ("twotower", "dcnv2", "mmoe")
                      else 0)
