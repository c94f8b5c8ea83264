"""The dataset cache (`advrec.data.source.resolve_dataset`) is keyed on the source's files
themselves: a log edited in place inside a directory, or an object under an S3 prefix, is
prepared again, and an untouched one is reused."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec

from advrec.config import DataConfig
from advrec.data.source import resolve_dataset

# 6 users x 6 items, rating 3: every user keeps items for the random split
U_DATA = "".join(f"{u}\t{i}\t3\t{1000 + 10 * u + i}\n" for u in range(1, 7) for i in range(1, 7))


def test_an_edit_in_place_inside_a_directory_prepares_again(tmp_path: Path) -> None:
    source = tmp_path / "ml"
    source.mkdir()
    ratings = source / "u.data"
    ratings.write_text(U_DATA)
    cfg = DataConfig(source=str(source), cache_dir=str(tmp_path / "cache"))
    first = resolve_dataset(cfg)
    assert resolve_dataset(cfg) == first  # untouched: reused
    before = os.stat(source)
    with open(ratings, "r+b") as f:  # the same size, the directory's own entry untouched
        f.write(b"1\t1\t4")
    stat = os.stat(ratings)
    os.utime(ratings, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse clocks
    assert (os.stat(source).st_mtime_ns, os.stat(source).st_size) == (before.st_mtime_ns,
                                                                      before.st_size)
    again = resolve_dataset(cfg)
    assert again != first
    assert Path(again, "meta.json").exists()


def test_an_object_replaced_under_an_s3_prefix_prepares_again(s3_store: str,
                                                                tmp_path: Path) -> None:
    fs = fsspec.filesystem("s3")
    prefix = "advrec/source-test/ml"
    fs.pipe(f"{prefix}/u.data", U_DATA.encode())
    cfg = DataConfig(source=f"s3://{prefix}", cache_dir=str(tmp_path / "cache"))
    first = resolve_dataset(cfg)
    assert resolve_dataset(cfg) == first
    fs.pipe(f"{prefix}/u.data", U_DATA.replace("\t3\t", "\t4\t", 1).encode())  # same size
    assert resolve_dataset(cfg) != first


def test_a_prepared_dataset_is_used_whatever_raw_format_is_named(tmp_path: Path) -> None:
    """A shipped config names its raw log's format (movielens); run on a dataset `advrec
    poison` or `advrec detect` wrote, it trains on that dataset, not on a log read anew."""
    source = tmp_path / "ml"
    source.mkdir()
    (source / "u.data").write_text(U_DATA)
    prepared = resolve_dataset(DataConfig(source=str(source), cache_dir=str(tmp_path / "c")))
    cfg = DataConfig(source=prepared, format="movielens", cache_dir=str(tmp_path / "c2"))
    assert resolve_dataset(cfg) == prepared
    assert not (tmp_path / "c2").exists()


def test_relative_paths_resolve_to_absolute_urls(tmp_path: Path, monkeypatch) -> None:
    """A run records its dataset; its Ray workers, a resumed run and a warm start elsewhere
    read it from other working directories, so a relative source or cache becomes absolute."""
    (tmp_path / "ml").mkdir()
    (tmp_path / "ml" / "u.data").write_text(U_DATA)
    monkeypatch.chdir(tmp_path)
    prepared = resolve_dataset(DataConfig(source="ml", cache_dir="c"))
    assert prepared.startswith(str(tmp_path / "c") + "/")
    relative = prepared.removeprefix(str(tmp_path) + "/")
    assert resolve_dataset(DataConfig(source=relative, format="prepared")) == prepared
