"""The tables' size is checked before they are allocated (`advrec.models.memory`), a failed
allocation is one line, and the zoo builds each configured name as its own model, no other."""

from __future__ import annotations

import typing

import pytest
import torch

from advrec.config import ModelConfig, build_config
from advrec.data import load_dataset
from advrec.errors import AdvrecError
from advrec.models import build_model
from advrec.models.memory import (
    GIB,
    allocating,
    check_fits,
    id_table_bytes,
    physical_memory,
)
from synthetic import prepared_synth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small synthetic log, prepared: 30 users, 30 items."""
    return prepared_synth(tmp_path_factory.mktemp("memory"), 30, 30, 400)


def test_id_tables_by_model() -> None:
    assert id_table_bytes(ModelConfig(name="mf", dim=8), 60, 40) == 100 * 8 * 4
    assert id_table_bytes(ModelConfig(name="neumf", dim=8), 60, 40) == 2 * 100 * 8 * 4
    assert id_table_bytes(ModelConfig(name="sasrec", dim=8), 60, 40) == 41 * 8 * 4
    assert id_table_bytes(ModelConfig(name="deepfm", dim=8), 60, 40) == 100 * 8 * 4


def test_tables_larger_than_memory_are_refused_before_allocation() -> None:
    with pytest.raises(AdvrecError, match=r"^model\.dim=1000000000: the embedding tables and "
                       r"their adam state need at least 1117\.6 GiB, more than this machine's "):
        check_fits(ModelConfig(dim=10**9), 60, 40, "adam")
    with pytest.raises(AdvrecError, match=r"the embedding tables need at least 372\.5 GiB"):
        check_fits(ModelConfig(dim=10**9), 60, 40)  # evaluating: no optimizer state
    check_fits(ModelConfig(dim=64), 60, 40, "adam")


def test_sharded_tables_count_each_workers_share() -> None:
    memory = physical_memory()
    assert memory is not None and memory > GIB
    dim = 3 * memory // (100 * 4)  # three times the memory, as one table
    with pytest.raises(AdvrecError, match=r"\(1/2 per worker\), more than"):
        check_fits(ModelConfig(dim=dim), 60, 40, "sgd", share=2)  # 1.5 times the memory each
    check_fits(ModelConfig(dim=dim), 60, 40, "sgd", share=4)


def test_a_failed_allocation_is_one_line_naming_model_dim() -> None:
    # 256 TiB: more than any machine's address space, whatever the OS's overcommit policy
    with pytest.raises(AdvrecError, match=r"^out of memory with model\.dim=8 \(.*can't allocate "
                       r"memory") as info, allocating(ModelConfig(dim=8)):
        torch.empty(2**48, dtype=torch.uint8)
    assert "\n" not in str(info.value)
    with pytest.raises(RuntimeError, match="other"), allocating(ModelConfig(dim=8)):
        raise RuntimeError("other")  # any other error goes through as it is


def test_every_configured_name_builds_its_own_model(dataset: str) -> None:
    data = load_dataset(dataset)
    names = typing.get_args(ModelConfig.model_fields["name"].annotation)
    for name in names:
        model = build_model(build_config({"data": {"source": dataset},
                                          "model": {"name": name, "dim": 8}}), data)
        assert type(model).__name__.lower() == name


def test_an_unknown_name_is_an_error(dataset: str) -> None:
    cfg = build_config({"data": {"source": dataset}})
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": "nope"})})
    with pytest.raises(AdvrecError, match=r"model\.name: no model 'nope' in the zoo"):
        build_model(cfg, load_dataset(dataset))
