"""A model checkpoint that does not match the run's config (an edited ``model.dim``, a missing
or foreign tensor, a missing field) is a one-line error naming the key and the shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from advrec.config import build_config
from advrec.data import load_dataset
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.train.checkpoint import load_model, save_checkpoint
from synthetic import prepared_synth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return prepared_synth(tmp_path_factory.mktemp("ckpt"), 30, 30, 400)


def _saved(dataset: str, tmp_path: Path, **model) -> str:
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8, **model}})
    url = str(tmp_path / "model.pt")
    save_checkpoint(url, build_model(cfg, load_dataset(dataset)), cfg, 0)
    return url


def test_a_config_of_another_shape_names_the_tensor_and_the_key(dataset, tmp_path) -> None:
    url = _saved(dataset, tmp_path)
    data = load_dataset(dataset)
    load_model(url, build_config({"data": {"source": dataset},
                                  "model": {"dim": 8}}), data)  # as trained: loads
    edited = build_config({"data": {"source": dataset}, "model": {"dim": 16}})
    with pytest.raises(AdvrecError, match=rf"model\.pt: 'user\.weight' has shape "
                       rf"\[{data.num_users}, 8\], but \[{data.num_users}, 16\] in the model of "
                       r"the run's config \(model\.dim: 8 saved, 16 in the config\)$"):
        load_model(url, edited, data)


def test_missing_or_foreign_tensors_and_fields_are_named(dataset, tmp_path) -> None:
    url = _saved(dataset, tmp_path)
    cfg = build_config({"data": {"source": dataset}, "model": {"dim": 8}})
    data = load_dataset(dataset)
    ckpt = torch.load(url, weights_only=True)
    weights = ckpt["model"]
    torch.save({**ckpt, "model": {k: v for k, v in weights.items() if k != "item.weight"}}, url)
    with pytest.raises(AdvrecError, match=r"model\.pt: no weights for 'item\.weight'"):
        load_model(url, cfg, data)
    torch.save({**ckpt, "model": {**weights, "extra": torch.zeros(1)}}, url)
    with pytest.raises(AdvrecError, match=r"model\.pt: weights for 'extra', which the model has "
                       r"not$"):
        load_model(url, cfg, data)
    torch.save({k: v for k, v in ckpt.items() if k != "num_users"}, url)
    with pytest.raises(AdvrecError, match=r"model\.pt: not an advrec model checkpoint \(no "
                       r"'num_users'\)"):
        load_model(url, cfg, data)
