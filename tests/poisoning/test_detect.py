"""`advrec detect`: it finds planted fakes, scores every user, and its cleaned dataset trains.

The fakes are planted by `advrec poison` (:func:`advrec.poisoning.poison.poison`) in a small log
of users with tastes (a few groups of items each, Zipf popularity within a group), as real users
have. Its ml-100k figures are measured by benchmarks, not here (README.md, "advrec detect").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec.cli import main
from advrec.data import prepare
from advrec.data.dataset import load_dataset
from advrec.errors import AdvrecError
from advrec.poisoning import FAKE_PREFIX, TARGETS_FILE
from advrec.poisoning import detect as detect_module
from advrec.poisoning.detect import Selection, detect, neighbour_similarity
from advrec.poisoning.poison import poison

FAKES = 10
FILLER = 30


def tastes_log(root: Path, users: int = 200, groups: int = 4, per_group: int = 100,
               profile: int = 30, seed: int = 0) -> Path:
    """A prepared log of ``users`` users, each of ``profile`` items of one of ``groups`` groups
    of ``per_group`` items, drawn by a Zipf popularity within the group."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, per_group + 1)
    user = np.repeat(np.arange(users), profile)
    item = np.concatenate([(u % groups) * per_group + rng.choice(
        per_group, profile, replace=False, p=weights / weights.sum()) for u in range(users)])
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": user, "item_id": item,
                             "timestamp": np.arange(user.size)}), root / "log.parquet")
    prepare(str(root / "log.parquet"), "parquet", str(root / "data"))
    return root / "data"


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tastes_log(tmp_path_factory.mktemp("tastes"))


@pytest.mark.parametrize(("attack", "filler"), [
    ("random", FILLER), ("bandwagon", FILLER), ("average", FILLER), ("segment", FILLER),
    ("random", 10),  # short profiles: loneliness alone ranks genuine users among them; the
    # co-raters find them all (the targets' other users are the fakes)
    ("random", 0),  # clones: every fake the targets alone, the same profile
])
def test_finds_planted_fakes(clean: Path, tmp_path: Path, attack: str, filler: int) -> None:
    poison(str(clean), str(tmp_path / "poisoned"), attack, fake_users=FAKES, filler=filler, seed=1)
    report = detect(str(tmp_path / "poisoned"), str(tmp_path / "out"), Selection(top=FAKES))
    assert report["removed"]["users"] == list(range(200, 200 + FAKES))  # the fakes, no one else
    assert report["against_fakes"] == {"fakes": FAKES, "flagged": FAKES, "of": "removed",
                                       "precision": 1.0, "recall": 1.0, "roc_auc": 1.0}
    assert json.loads((tmp_path / "out/detection.json").read_text()) == report
    scores = pq.read_table(tmp_path / "out/scores.parquet").to_pydict()
    assert scores["user"] == list(range(200 + FAKES))
    assert [r.startswith(FAKE_PREFIX) for r in scores["raw_id"]] == [False] * 200 + [True] * FAKES
    assert scores["removed"] == [False] * 200 + [True] * FAKES
    assert scores["profile_size"][200:] == [5 + filler] * FAKES  # targets + fillers


def test_cleaned_dataset_loses_only_the_suspects_train_rows(clean: Path, tmp_path: Path) -> None:
    poison(str(clean), str(tmp_path / "poisoned"), "bandwagon", fake_users=FAKES, filler=FILLER,
           seed=1)
    assert main(["detect", "--data", str(tmp_path / "poisoned"), "--output",
                 str(tmp_path / "out"), "--remove", str(FAKES)]) == 0
    poisoned, cleaned = load_dataset(str(tmp_path / "poisoned")), load_dataset(str(tmp_path / "out"))
    genuine = poisoned.train.user < 200
    assert torch.equal(cleaned.train.user, poisoned.train.user[genuine])
    assert torch.equal(cleaned.train.item, poisoned.train.item[genuine])
    for split in ("valid", "test"):  # untouched, so metrics stay comparable
        assert torch.equal(cleaned.split(split).item, poisoned.split(split).item)
    assert (cleaned.num_users, cleaned.num_items) == (poisoned.num_users, poisoned.num_items)
    assert cleaned.meta["poison"] == poisoned.meta["poison"]
    assert cleaned.meta["counts"]["train"] == len(cleaned.train)
    assert cleaned.meta["detection"] == {"source": str(tmp_path / "poisoned"), "top": FAKES,
                                         "users": FAKES, "rows": FAKES * (5 + FILLER),
                                         "scores": "scores.parquet"}
    for name in ("users.parquet", "items.parquet", TARGETS_FILE):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "poisoned" / name).read_bytes()


def test_threshold_removes_every_user_scored_at_least_it(clean: Path, tmp_path: Path) -> None:
    poison(str(clean), str(tmp_path / "poisoned"), "random", fake_users=FAKES, seed=2)
    scores = detect(str(tmp_path / "poisoned"), str(tmp_path / "first"))
    assert scores["removed"] is None and not (tmp_path / "first/meta.json").exists()
    score = np.array(pq.read_table(tmp_path / "first/scores.parquet")["score"])
    threshold = float(np.sort(score)[-(FAKES + 3)])  # the fakes and 3 more
    report = detect(str(tmp_path / "poisoned"), str(tmp_path / "out"),
                    Selection(threshold=threshold))
    assert report["removed"]["users"] == np.flatnonzero(score >= threshold).tolist()
    assert report["against_fakes"]["recall"] == 1.0
    assert report["against_fakes"]["precision"] == FAKES / (FAKES + 3)


def test_clean_dataset_has_no_fakes_to_measure(clean: Path, tmp_path: Path) -> None:
    report = detect(str(clean), str(tmp_path / "out"), Selection(top=3))
    assert report["against_fakes"] is None and report["genuine_users"] == 200
    train = load_dataset(str(tmp_path / "out")).train
    assert len(train) == len(load_dataset(str(clean)).train) - report["removed"]["rows"]
    assert not np.isin(train.user.numpy(), report["removed"]["users"]).any()


def test_replaces_its_own_output_only(clean: Path, tmp_path: Path) -> None:
    detect(str(clean), str(tmp_path / "out"), Selection(top=3))
    detect(str(clean), str(tmp_path / "out"))  # a detection replaces a detection
    assert not (tmp_path / "out/meta.json").exists()
    with pytest.raises(AdvrecError, match="exists and is not a detection output"):
        detect(str(tmp_path / "out"), str(clean))  # a dataset is not detect's to replace
    with pytest.raises(AdvrecError, match=r"--remove 200: expected 1 \.\. 199 users"):
        detect(str(clean), str(tmp_path / "again"), Selection(top=200))
    assert not (tmp_path / "again").exists()


def test_neighbour_similarity_is_the_brute_force_one_in_any_blocks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of reference users and blocks of users (forced tiny here) change nothing: each
    user's mean IDF-cosine to its k nearest others, computed densely."""
    rng = np.random.default_rng(0)
    users, items, k = 30, 12, 3
    dense = rng.random((users, items)) < 0.3
    dense[7] = False  # a user without interactions
    user, item = np.nonzero(dense)
    pop = dense.sum(0)
    x = dense * np.log(users / np.maximum(pop, 1))
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -1)
    expected = np.sort(sim, axis=1)[:, -k:].clip(0).mean(1)
    expected[7] = 0.0
    for chunk_floats in (detect_module.CHUNK_FLOATS, 5 * items):
        monkeypatch.setattr(detect_module, "CHUNK_FLOATS", chunk_floats)
        got = neighbour_similarity(user, item, users, items, k=k)
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # a reference sample: each user compared with those 10 only (itself excluded)
    got = neighbour_similarity(user, item, users, items, k=k, reference=10, seed=3)
    refs = np.sort(np.random.default_rng(3).choice(users, 10, replace=False))
    np.testing.assert_allclose(got, np.where(
        dense.any(1), np.sort(sim[:, refs], axis=1)[:, -k:].clip(0).mean(1), 0), atol=1e-6)


def test_object_storage_in_and_out(s3_store: str, clean: Path, tmp_path: Path) -> None:
    """A dataset in S3, the detection (and cleaned dataset) written to S3, replaced there, the
    same scores as on a local disk."""
    import s3fs

    poison(str(clean), str(tmp_path / "poisoned"), "random", fake_users=FAKES, filler=FILLER,
           seed=1)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(tmp_path / "poisoned"), "advrec/detect/poisoned", recursive=True)
    data, out = "s3://advrec/detect/poisoned", "s3://advrec/detect/out"
    local = detect(str(tmp_path / "poisoned"), str(tmp_path / "out"), Selection(top=FAKES))
    detect(data, out)
    remote = detect(data, out, Selection(top=FAKES))  # replaces the first
    assert remote["removed"] == local["removed"]
    assert remote["against_fakes"] == local["against_fakes"]
    assert fs.cat_file("advrec/detect/out/scores.parquet") == \
        (tmp_path / "out/scores.parquet").read_bytes()
    assert len(load_dataset(out).train) == len(load_dataset(str(tmp_path / "out")).train)
    # no temporary file left (SeaweedFS keeps an empty OUT.tmp-* directory entry, as for prepare)
    fs.invalidate_cache()
    assert not [p for p in fs.find("advrec/detect") if ".tmp-" in p]


def test_ctr_dataset_keeps_its_labels(ctr_small: str, tmp_path: Path) -> None:
    report = detect(ctr_small, str(tmp_path / "out"), Selection(top=5))
    cleaned, source = load_dataset(str(tmp_path / "out")), load_dataset(ctr_small)
    kept = ~torch.from_numpy(np.isin(source.train.user.numpy(), report["removed"]["users"]))
    assert torch.equal(cleaned.train.label, source.train.label[kept])
    assert cleaned.meta["task"] == "ctr" and (tmp_path / "out/item_features.parquet").exists()
