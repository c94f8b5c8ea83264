"""load_dataset(): tensors, CSR positives, missing datasets, and an fsspec (memory://) round trip."""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec.data import Dataset, is_prepared, load_dataset, prepare
from advrec.errors import AdvrecError

LOG = "user_id,item_id,timestamp\n" + "".join(
    f"{u},{i},{t}\n"
    for t, (u, i) in enumerate(
        [(3, 1), (1, 2), (3, 3), (2, 1), (1, 4), (3, 2), (1, 1), (2, 2), (2, 3), (1, 3), (3, 4)]
    )
)


@pytest.fixture
def dataset(write, tmp_path) -> Dataset:
    prepare(write("log.csv", LOG), "csv", str(tmp_path / "ds"), split="loo")
    return load_dataset(str(tmp_path / "ds"))


def test_load_dataset(dataset):
    assert (dataset.num_users, dataset.num_items) == (3, 4)
    assert dataset.meta["counts"] == {"train": 5, "valid": 3, "test": 3}
    train = dataset.train
    assert train.user.dtype == train.item.dtype == train.timestamp.dtype == torch.int64
    # User 0 (raw '1'): items 2, 4, 1, 3 in time order -> train {2, 4}, valid 1, test 3.
    assert train.user.tolist() == [0, 0, 1, 2, 2]
    assert train.item.tolist() == [1, 3, 0, 0, 2]
    assert dataset.test.item.tolist() == [2, 2, 3]
    assert len(dataset.valid) == 3
    with pytest.raises(AdvrecError, match="unknown split 'dev'"):
        dataset.split("dev")


def test_positives_csr(dataset):
    indptr, indices = dataset.positives("train")
    assert indptr.tolist() == [0, 2, 3, 5]
    assert indices.tolist() == [1, 3, 0, 0, 2]  # sorted within each user
    for u in range(dataset.num_users):
        mine = dataset.train.item[dataset.train.user == u].sort().values
        assert torch.equal(indices[indptr[u] : indptr[u + 1]], mine)


def test_missing_dataset(tmp_path):
    assert not is_prepared(str(tmp_path))
    with pytest.raises(
        AdvrecError, match=r"nowhere: not a prepared dataset .*run `advrec prepare`"
    ):
        load_dataset(str(tmp_path / "nowhere"))


def test_fsspec_round_trip():
    base = "memory://advrec-test-dataset"
    with fsspec.open(f"{base}/raw/log.csv", "w") as f:
        f.write(LOG)
    try:
        prepare(f"{base}/raw/log.csv", "csv", f"{base}/ds", split="loo")
        assert is_prepared(f"{base}/ds")
        assert load_dataset(f"{base}/ds").meta["source"] == f"{base}/raw/log.csv"
        assert fsspec.filesystem("memory").ls("/advrec-test-dataset", detail=False) == [
            "/advrec-test-dataset/ds",
            "/advrec-test-dataset/raw",
        ]
    finally:
        fsspec.filesystem("memory").rm("/advrec-test-dataset", recursive=True)


def test_out_of_range_index_names_file_and_column(write, tmp_path):
    out = tmp_path / "ds"
    prepare(write("log.csv", LOG), "csv", str(out), split="loo")
    table = pq.read_table(out / "test.parquet")
    users = table["user"].to_numpy().copy()
    users[0] = -1
    pq.write_table(table.set_column(0, "user", pa.array(users, pa.int32())), out / "test.parquet")
    with pytest.raises(AdvrecError, match=r"test.parquet: column 'user' has index -1 outside"):
        load_dataset(str(out))
