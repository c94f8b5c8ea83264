import copy
import time
from pathlib import Path

import pytest
import yaml

from advrec import strict_yaml
from advrec.config import (
    apply_overrides,
    build_config,
    dump_config,
    load_config,
    with_values,
)
from advrec.errors import AdvrecError
from test_hostile import ALIAS_BOMB

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


@pytest.mark.parametrize("where", ["adv: {eps: *a8}", "tune: {space: {adv.eps: {choice: *a8}}}"])
def test_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path: Path, where: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(f"data: {{source: x}}\n{ALIAS_BOMB}{where}\n")
    assert path.stat().st_size < 1000
    started = time.monotonic()
    with pytest.raises(AdvrecError) as err:
        load_config(path)
    assert time.monotonic() - started < 5  # before: > 8 GB and 70 s
    message = str(err.value)
    assert message.startswith(f"{path} at line 3, column 10: alias *a0: aliases are refused")
    assert len(message) < 200 and "\n" not in message


def test_override_alias_is_refused() -> None:
    with pytest.raises(AdvrecError, match=r"^override 'adv.eps=\[&a \[1,1\],\*a\]' at line 1, "
                                          r"column 11: alias \*a: aliases are refused"):
        build_config(BASE, ["adv.eps=[&a [1,1],*a]"])


@pytest.mark.parametrize("text, culprit", [
    ("data: {source: x}\nadv: {eps: 1}\nadv: {lambda: 2}\n",
     "at line 3, column 1: key 'adv' is repeated"),
    ("data: {source: x}\nadv:\n  eps: 1\n  steps: 2\n  eps: 3\n",
     "at line 5, column 3: key 'eps' is repeated"),
    ("data: {source: x, source: y}\n", "at line 1, column 19: key 'source' is repeated"),
])
def test_repeated_key_is_an_error_naming_it(tmp_path: Path, text: str, culprit: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(AdvrecError) as err:
        load_config(path)
    assert str(err.value) == f"{path} {culprit} (YAML would silently keep only the last)"


@pytest.mark.parametrize("write, culprit", [
    (lambda p: p.mkdir(), "is a directory, not a config file"),
    (lambda p: p.write_bytes(bytes(range(256))),
     "not YAML text (not utf-8: byte 0x80 at position 128"),
    (lambda p: p.write_bytes(b"data: {source: x}\x00\n"), "not YAML text (character U+0000"),
    (lambda p: p.write_text("- data\n- adv\n"), "a config file must be a YAML mapping, not a list"),
    (lambda p: p.write_text("false\n"), "a config file must be a YAML mapping, not a bool"),
    (lambda p: p.write_text("data: {source: x}\nadv: " + "[" * 40 + "]" * 40 + "\n"),
     "at line 2, column 37: nested deeper than 32 levels"),
    (lambda p: p.write_text("data: {source: " + "x" * (10 << 20) + "}\n"),
     "more than 64 KiB of YAML"),
    (lambda p: p.write_text("data: {source: x}\nmodel: {dim: " + "1" * 5000 + "}\n"),
     "not valid YAML at line 2, column 14: Exceeds the limit (4300 digits)"),
    (lambda p: p.write_text("data: !!python/object/apply:os.system [touch PWNED]\n"),
     "not valid YAML at line 1, column 7: could not determine a constructor for the tag"),
])
def test_bad_config_files_are_one_line(tmp_path: Path, write, culprit: str) -> None:
    path = tmp_path / "c.yaml"
    write(path)
    with pytest.raises(AdvrecError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(str(path)) and culprit in message
    assert len(message) < 300 and "\n" not in message
    assert not (tmp_path / "PWNED").exists()


def test_empty_config_file_is_no_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# nothing yet\n")
    assert load_config(path, ["data.source=x"]) == build_config(BASE)


@pytest.mark.parametrize("override, culprit", [
    (["adv.method=" + "x" * 10_000], ("adv.method: Input should be 'none', 'random', 'fgsm', "
                                      "'fgm', 'pgd', 'jsma', 'jsma-items' or 'jsma-fields' "
                                      "(got 'xxxxxxxxxx")),
    (["adv.eps=" + "1" * (70 << 10)], "override '" + "adv.eps=" + "1" * 19),
    (["adv.x\ny=1"], r"adv.'x\ny': unknown config key"),
    (["adv." + "k" * 10_000 + "=1"], "adv.'kkkkk"),
    (["data.user_features=[a, " + "b" * 10_000 + ", a]"], ("data.user_features: column 'a' "
                                                          "is listed twice")),
    (["eval.eps=[" + "-1," * 5000 + "0]"], ("eval.eps: must be a non-empty list of eps >= 0 "
                                            "(got [-1, -1, -1, -1, -1, -1, ...])")),
    (["adv.=1"], "override 'adv.=1': a key is names joined by dots"),
    (["adv..eps=1"], "override 'adv..eps=1': a key is names joined by dots"),
    ([".=1"], "override '.=1': a key is names joined by dots"),
    (["adv.eps=["], "override 'adv.eps=[': not valid YAML at line 1, column 2"),
    (["adv.eps=\x00"], "override 'adv.eps=\\x00': not YAML text (character U+0000"),
    (["data.source=2001-13-01"], ("override 'data.source=2001-13-01': not valid YAML at line "
                                  "1, column 1: month must be in 1..12")),
    (["adv=3"], "adv: Input should be a valid dictionary"),
    (["adv=3", "adv.eps=1"], "override 'adv.eps=1': adv is not a section"),
])
def test_garbage_overrides_are_short_lines(override: list[str], culprit: str) -> None:
    with pytest.raises(AdvrecError) as err:
        build_config(BASE, override)
    message = str(err.value)
    assert culprit in message and len(message) < 300 and "\n" not in message


def test_overrides_leave_the_raw_config_as_it_was() -> None:
    raw = {"data": {"source": "x"}, "tune": {"space": {"adv.eps": {"choice": [1]}}}}
    before = copy.deepcopy(raw)
    with_values(apply_overrides(raw, ["tune.space.x.choice=[2]"]), {"data.source": "y"})
    assert raw == before


@pytest.mark.parametrize("override", [
    "adv.eps=.inf", "adv.lambda=.nan", "adv.step_size=.inf", "train.lr=.inf", "train.lr=.nan",
    "train.weight_decay=.inf", "train.reg=.nan", "model.dropout=.nan", "model.temperature=.inf",
    "model.init_std=.inf", "model.task_weights={click: .nan}", "data.min_rating=-.inf",
    "data.label_threshold=.nan", "eval.eps=[0, .inf]", "eval.robust_eps=.inf",
    "scaling.cpus_per_worker=.inf", "tune.reduction_factor=.inf",
    "tune.weights={valid/ndcg@10: .nan}",
    "tune.space={adv.eps: {loguniform: [0.1, .inf]}}", "train.lr=1.0e400",
])
def test_non_finite_numbers_are_refused_everywhere(override: str) -> None:
    key = override.split("=", 1)[0]
    with pytest.raises(AdvrecError) as err:
        build_config(BASE, [override])
    assert str(err.value).startswith(key) and "Input should be a finite number" in str(err.value)


def test_dumped_yaml_has_no_aliases_and_reads_back() -> None:
    shared = [1, 2]
    text = strict_yaml.dump({"a": shared, "b": shared})
    assert "&" not in text and "*" not in text
    assert strict_yaml.load(text, "x") == {"a": [1, 2], "b": [1, 2]}
