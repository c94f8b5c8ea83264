from pathlib import Path

import pytest
import yaml

from advrec.config import build_config, dump_config, load_config
from advrec.errors import AdvrecError

CONFIGS = Path(__file__).resolve().parents[1] / "jobs" / "configs"
BASE = {"data": {"source": "x"}}


def test_defaults_and_typed_overrides() -> None:
    cfg = build_config(BASE, ["adv.eps=0.25", "adv.lambda=2", "adv.method=pgd", "eval.ks=[5,10]",
                              "train.monitor=recall@5", "adv.random_start=true"])
    assert cfg.adv.eps == 0.25 and cfg.adv.lam == 2.0 and cfg.adv.method == "pgd"
    assert cfg.eval.ks == [5, 10] and cfg.adv.random_start is True
    assert cfg.train.batch_size == 2048 and cfg.model.name == "mf"


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = build_config(BASE, ["adv.lambda=0.3"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert "lambda: 0.3" in path.read_text()
    assert load_config(path) == cfg


@pytest.mark.parametrize("override, culprit", [
    (["adv.epsilon=1"], "adv.epsilon: unknown config key"),
    (["modle.name=mf"], "modle: unknown config key"),
    (["adv.eps=-1"], "adv.eps"),
    (["adv.steps=0"], "adv.steps"),
    (["adv.method=pgdd"], "adv.method"),
    (["model.name=bert"], "model.name"),
    (["train.lr=fast"], "train.lr"),
    (["eval.ks=[0]"], "eval.ks"),
    (["eval.eps=[-0.1]"], "eval.eps"),
    (["scaling.num_workers=-1"], "scaling.num_workers"),
    (["scaling.cpus_per_worker=0"], "scaling.cpus_per_worker"),
    (["scaling.gpus=1"], "scaling.gpus: unknown config key"),
    (["scaling.max_failures=-1"], "scaling.max_failures"),
    (["train.checkpoint_every=-1"], "train.checkpoint_every"),
    (["train.fault_epoch=-2"], "train.fault_epoch"),
    (["train.sparse_embeddings=true", "train.weight_decay=0.01"],
     "train: weight_decay does not apply to sparse gradients"),
    (["model.name=sasrec", "train.sparse_embeddings=true", "train.num_negatives=all"],
     "train: num_negatives=all scores every item, so its gradient is dense"),
    (["train.monitor=ndcg@50"], "train.monitor"),
    (["data.shuffle_buffer=0"], "data.shuffle_buffer"),
    (["scaling.use_gpu=true", "train.sparse_embeddings=true"],
     "train.sparse_embeddings: sparse gradients are all-reduced by gloo (CPU) only"),
    (["model.name=sasrec", "data.stream=true"],
     "data.stream: SASRec trains on whole per-user sequences"),
    (["adv.eps"], "override 'adv.eps'"),
    (["model.heads=3"], "model: 3 heads do not divide model.dim=64"),
    (["model.max_len=0"], "model.max_len"),
    (["train.num_negatives=0"], "train.num_negatives: must be a positive integer, or 'all'"),
    (["train.num_negatives=some"], "train.num_negatives: must be a positive integer, or 'all'"),
    (["train.num_negatives=all"], ("train.num_negatives: 'all' (every item at every position) is "
                                  "for model.name=sasrec, not mf")),
])
def test_bad_keys_and_values_name_the_key(override: list[str], culprit: str) -> None:
    with pytest.raises(AdvrecError) as err:
        build_config(BASE, override)
    message = str(err.value)
    assert culprit in message and "\n" not in message


def test_missing_source_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AdvrecError, match="data: required config key is missing"):
        build_config({})
    with pytest.raises(AdvrecError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed")
    with pytest.raises(AdvrecError, match="bad.yaml: not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path: Path) -> None:
    cfg = load_config(path)
    assert yaml.safe_load(path.read_text())["data"]["source"] == cfg.data.source


def test_log_feature_and_label_column_keys() -> None:
    cfg = build_config(BASE)
    assert (cfg.data.user_features, cfg.data.item_features, cfg.data.label_column) == ([], [], None)
    cfg = build_config(BASE, ["data.user_features=[age,gender]", "data.item_features=[genre]",
                              "data.label_column=click"])
    assert cfg.data.user_features == ["age", "gender"] and cfg.data.item_features == ["genre"]
    assert cfg.data.label_column == "click"
    assert build_config(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize("override, culprit", [
    (["data.user_features=age"], "data.user_features"),
    (["data.item_features=[genre,genre]"], "data.item_features: column 'genre' is listed twice"),
    (["data.user_features=['']"], "data.user_features: column names must be non-empty"),
    (["data.label_column=''"], "data.label_column: must name a column"),
    (["data.label_column=click", "data.label_threshold=4"],
     "data: data.label_column and data.label_threshold exclude each other"),
    (["data.label_column=click", "data.min_rating=4"],
     "data: data.label_column and data.min_rating exclude each other"),
    (["data.user_feature=[age]"], "data.user_feature: unknown config key"),
])
def test_bad_log_feature_and_label_keys(override: list[str], culprit: str) -> None:
    with pytest.raises(AdvrecError) as err:
        build_config(BASE, override)
    message = str(err.value)
    assert culprit in message and "\n" not in message
