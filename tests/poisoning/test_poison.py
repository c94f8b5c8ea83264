"""``advrec poison``: fake users in the training split only, each holding the targets and the
right number of fillers, the same bytes for a seed, for pair, sequence and CTR data; and what
each attack's fillers are made of."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from advrec.cli import main
from advrec.data import prepare
from advrec.errors import AdvrecError
from advrec.poisoning import FAKE_PREFIX, TARGETS_FILE, TrainLog
from advrec.poisoning.attacks import (
    ATTACKS,
    BANDWAGON_SHARE,
    SEGMENT_SHARE,
    affinity,
    popularity,
)
from advrec.poisoning.poison import pick_targets, poison, unpopular
from synthetic import prepared_synth, synthetic_log, write_atomic

CLASSIC = ["random", "average", "bandwagon", "segment"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A plain synthetic dataset: 60 users, 40 items, no features."""
    return prepared_synth(tmp_path_factory.mktemp("pairs"), 60, 40, 1200)


@pytest.fixture(scope="module")
def featured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A synthetic log with user and item features (genres), prepared as a ranking dataset
    (``rank``) and as a CTR one (``ctr``: 4 stars or more is a click)."""
    root = tmp_path_factory.mktemp("featured")
    atomic = write_atomic(synthetic_log(root, 60, 80, 1500), root / "atomic")
    out = {"rank": str(root / "rank"), "ctr": str(root / "ctr")}
    prepare(str(atomic), "recbole", out["rank"])
    prepare(str(atomic), "recbole", out["ctr"], label_threshold=4.0)
    return out


def digests(directory: str) -> dict[str, str]:
    """Each file of a directory by name: its SHA-256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).iterdir())}


def read(directory: str, name: str) -> dict[str, np.ndarray]:
    """A Parquet file of a dataset as numpy columns."""
    table = pq.read_table(Path(directory) / name)
    return {c: table[c].to_numpy() for c in table.column_names}


def check_layout(clean: str, poisoned: str, meta: dict[str, Any]) -> dict[int, np.ndarray]:
    """Assert the layout of `advrec.poisoning.layout` and return each fake's training rows
    (indices into the poisoned train split, in file order)."""
    report = meta["poison"]
    genuine, fakes = report["genuine_users"], report["fake_users"]
    targets, filler = np.array(report["targets"]), report["filler"]
    clean_meta = json.loads((Path(clean) / "meta.json").read_text())
    assert genuine == clean_meta["num_users"] and meta["num_users"] == genuine + fakes
    assert meta == json.loads((Path(poisoned) / "meta.json").read_text())
    assert {k: v for k, v in meta.items() if k not in ("num_users", "counts", "poison")} == \
        {k: v for k, v in clean_meta.items() if k not in ("num_users", "counts")}
    # valid, test and the items untouched: no fake counts in any metric
    before, after = digests(clean), digests(poisoned)
    for name in ("valid.parquet", "test.parquet", "items.parquet", "item_features.parquet"):
        assert after.get(name) == before.get(name), name
    users = pq.read_table(Path(poisoned) / "users.parquet")
    assert users.slice(0, genuine).equals(pq.read_table(Path(clean) / "users.parquet"))
    assert users["raw_id"].to_pylist()[genuine:] == [f"{FAKE_PREFIX}{k}" for k in range(fakes)]
    assert users["index"].to_pylist() == list(range(genuine + fakes))
    # the genuine rows are the clean train split, the fakes' follow, all sorted as prepare's
    train = pq.read_table(Path(poisoned) / "train.parquet")
    clean_train = pq.read_table(Path(clean) / "train.parquet")
    assert train.schema == clean_train.schema
    assert train.slice(0, clean_train.num_rows).equals(clean_train)
    user, item, time = (train[c].to_numpy() for c in ("user", "item", "timestamp"))
    assert (np.lexsort((item, time, user)) == np.arange(train.num_rows)).all()
    assert meta["counts"] == {**clean_meta["counts"], "train": train.num_rows}
    assert train.num_rows == clean_train.num_rows + fakes * (filler + targets.size)
    profiles = {}
    for fake in range(genuine, genuine + fakes):
        rows = np.flatnonzero(user == fake)
        profile = item[rows]
        assert profile.size == filler + targets.size == np.unique(profile).size
        assert np.isin(targets, profile).all()  # every target in every fake profile
        profiles[fake] = rows
    saved = json.loads((Path(poisoned) / TARGETS_FILE).read_text())
    assert saved["indices"] == report["targets"] and saved["attack"] == report
    raw = pq.read_table(Path(poisoned) / "items.parquet")["raw_id"].to_pylist()
    assert saved["items"] == [raw[t] for t in report["targets"]]
    return profiles


@pytest.mark.parametrize("attack", CLASSIC)
def test_every_attack_on_pairs(attack: str, pairs: str, tmp_path: Path) -> None:
    meta = poison(pairs, str(tmp_path / "a"), attack, fake_users=0.05, seed=3)
    report = meta["poison"]
    assert report["fake_users"] == 3  # 5 % of 60
    clean_train = read(pairs, "train.parquet")
    assert report["filler"] == round(clean_train["user"].size / 60)  # the mean profile
    assert len(report["targets"]) == 5 and set(report["targets"]) <= set(
        unpopular(TrainLog(clean_train["user"], clean_train["item"], 60, 40)).tolist())
    check_layout(pairs, str(tmp_path / "a"), meta)

    # a seed repeats every byte; another seed draws other targets and fillers
    assert poison(pairs, str(tmp_path / "b"), attack, fake_users=0.05, seed=3) == meta
    assert digests(str(tmp_path / "a")) == digests(str(tmp_path / "b"))
    poison(pairs, str(tmp_path / "c"), attack, fake_users=0.05, seed=4)
    assert digests(str(tmp_path / "c"))["train.parquet"] != \
        digests(str(tmp_path / "a"))["train.parquet"]


def test_poisoned_pairs_train(pairs: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["poison", "--data", pairs, "--output", str(tmp_path / "p"), "--attack",
                 "bandwagon", "--fake-users", "4", "--filler", "7", "--targets", "2"]) == 0
    out = capsys.readouterr().out
    assert (f"poisoned {tmp_path / 'p'}: 4 fake users (bandwagon, 7 fillers + 2 targets each) "
            "beside 60 genuine ones, 36 training rows added") in out
    assert main(["train", "--output", str(tmp_path / "run"), "--quiet",
                 f"data.source={tmp_path / 'p'}", "model.dim=8", "train.epochs=1",
                 "eval.ks=[5]", "scaling.num_workers=0"]) == 0
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert 0 <= metrics["test"]["ndcg@5"] <= 1


def test_sequences_lead_to_the_targets(featured: dict[str, str], tmp_path: Path) -> None:
    out = str(tmp_path / "p")
    meta = poison(featured["rank"], out, "random", fake_users=3, filler=9)
    profiles = check_layout(featured["rank"], out, meta)
    train = read(out, "train.parquet")
    clean = read(featured["rank"], "train.parquet")
    targets = set(meta["poison"]["targets"])
    for rows in profiles.values():  # sorted by time: the fillers, then the targets
        assert set(train["item"][rows][-len(targets):]) == targets
        assert train["timestamp"][rows][-len(targets) - 1] < train["timestamp"][rows][-1]
        assert (clean["timestamp"].min() <= train["timestamp"][rows]).all()
        assert (train["timestamp"][rows] <= clean["timestamp"].max()).all()
        assert (train["rating"][rows] == clean["rating"].max()).all()
    assert main(["train", "--output", str(tmp_path / "run"), "--quiet", f"data.source={out}",
                 "model.name=sasrec", "model.dim=8", "train.epochs=1", "eval.ks=[5]",
                 "scaling.num_workers=0"]) == 0


def test_ctr_fakes_click(featured: dict[str, str], feature_options: dict[str, list[str]],
                         tmp_path: Path) -> None:
    out = str(tmp_path / "p")
    meta = poison(featured["ctr"], out, "segment", fake_users=0.05, seed=1)
    assert meta["task"] == "ctr"
    profiles = check_layout(featured["ctr"], out, meta)
    train = pq.read_table(Path(out) / "train.parquet")
    label = train["label"].to_numpy()
    assert train.schema.field("label").type == "int8"
    for rows in profiles.values():
        assert (label[rows] == 1).all()  # a fake clicks every item it holds
    # each fake's features are a genuine user's, under its own index
    features = pq.read_table(Path(out) / "user_features.parquet")
    clean = pq.read_table(Path(featured["ctr"]) / "user_features.parquet")
    assert features.schema == clean.schema  # the RecBole types kept
    assert features.slice(0, clean.num_rows).equals(clean)
    genuine_rows = set(zip(*(clean[c].to_pylist() for c in clean.column_names[1:])))
    fake_rows = features.slice(clean.num_rows)
    assert fake_rows["index"].to_pylist() == sorted(profiles)
    assert set(zip(*(fake_rows[c].to_pylist() for c in clean.column_names[1:]))) <= genuine_rows
    options = [f"data.{k}=[{','.join(v)}]" for k, v in feature_options.items()]
    assert main(["train", "--output", str(tmp_path / "run"), "--quiet", f"data.source={out}",
                 *options, "model.name=deepfm", "model.dim=8", "model.mlp_layers=[16]",
                 "train.epochs=1", "scaling.num_workers=0"]) == 0


# --- the attacks' fillers ---------------------------------------------------------------------

def train_log(data: str) -> TrainLog:
    """A dataset's training log as an attacker sees it, with its item features if any."""
    meta = json.loads((Path(data) / "meta.json").read_text())
    train = read(data, "train.parquet")
    features = Path(data) / "item_features.parquet"
    return TrainLog(train["user"].astype(np.int64), train["item"].astype(np.int64),
                    meta["num_users"], meta["num_items"],
                    pq.read_table(features) if features.exists() else None)


@pytest.mark.parametrize("attack", CLASSIC)
def test_fillers_keep_the_contract(attack: str, featured: dict[str, str]) -> None:
    log = train_log(featured["rank"])
    targets = np.array([3, 50])
    fillers = ATTACKS[attack](log, targets, 30, 12, np.random.default_rng(0))
    assert fillers.shape == (30, 12) and fillers.dtype == np.int64
    assert not np.isin(fillers, targets).any()
    assert all(np.unique(row).size == 12 for row in fillers)
    again = ATTACKS[attack](log, targets, 30, 12, np.random.default_rng(0))
    assert (fillers == again).all()
    # the whole catalogue less the targets is a possible profile
    full = ATTACKS[attack](log, targets, 2, log.num_items - 2, np.random.default_rng(0))
    assert (np.sort(full, axis=1) == np.setdiff1d(np.arange(log.num_items), targets)).all()


def test_average_follows_popularity(featured: dict[str, str]) -> None:
    log = train_log(featured["rank"])
    counts = popularity(log)
    drawn = np.bincount(ATTACKS["average"](log, np.array([0]), 2000, 5,
                                           np.random.default_rng(0)).reshape(-1),
                        minlength=log.num_items)
    by_popularity = np.argsort(counts[1:], kind="stable") + 1
    tenth = log.num_items // 10
    assert drawn[by_popularity[-tenth:]].sum() > 3 * drawn[by_popularity[:tenth]].sum()
    uniform = np.bincount(ATTACKS["random"](log, np.array([0]), 2000, 5,
                                            np.random.default_rng(0)).reshape(-1),
                          minlength=log.num_items)
    assert uniform[by_popularity[-tenth:]].sum() < 1.5 * uniform[by_popularity[:tenth]].sum()


def test_bandwagon_takes_the_blockbusters(featured: dict[str, str]) -> None:
    log = train_log(featured["rank"])
    counts = popularity(log)
    top = np.argsort(-counts, kind="stable")[:3]
    fillers = ATTACKS["bandwagon"](log, np.array([70]), 10, 25, np.random.default_rng(0))
    assert math.ceil(BANDWAGON_SHARE * 25) == 3
    assert all(set(top) <= set(row) for row in fillers)


def test_segment_by_genre_and_by_audience(featured: dict[str, str], pairs: str) -> None:
    log = train_log(featured["rank"])
    genres = [set(g.split()) for g in log.item_features["class"].to_pylist()]
    closeness = affinity(log, np.array([5, 6]))
    for item, close in enumerate(closeness):  # Jaccard similarity to the closer target
        expected = 0.0 if item in (5, 6) else max(
            len(genres[item] & genres[t]) / len(genres[item] | genres[t]) for t in (5, 6))
        assert close == pytest.approx(expected)
    fillers = ATTACKS["segment"](log, np.array([5, 6]), 20, 10, np.random.default_rng(0))
    in_segment = (closeness[fillers] > 0).sum(axis=1)
    assert (in_segment >= round(SEGMENT_SHARE * 10)).all()

    plain = train_log(pairs)  # no item features: by the users each item shares with a target
    audience = [set(plain.user[plain.item == i]) for i in range(plain.num_items)]
    closeness = affinity(plain, np.array([7]))
    for item, close in enumerate(closeness):
        expected = 0.0 if item == 7 else len(audience[item] & audience[7]) / math.sqrt(
            len(audience[item]) * len(audience[7]))
        assert close == pytest.approx(expected)


def test_targets_among_the_unpopular(pairs: str) -> None:
    log = train_log(pairs)
    counts = popularity(log)
    pool = unpopular(log)
    seen = np.flatnonzero(counts)
    assert pool.size == math.ceil(seen.size / 2) and (counts[pool] > 0).all()
    assert counts[pool].max() <= np.sort(counts[seen])[pool.size - 1]
    first = pick_targets(log, 5, np.random.default_rng(0))
    assert (first == pick_targets(log, 5, np.random.default_rng(0))).all()
    assert np.isin(first, pool).all() and np.unique(first).size == 5
    with pytest.raises(AdvrecError, match=f"--targets {pool.size + 1}: expected 1 to"):
        pick_targets(log, pool.size + 1, np.random.default_rng(0))


def test_named_targets(featured: dict[str, str], tmp_path: Path) -> None:
    items = pq.read_table(Path(featured["rank"]) / "items.parquet")
    raw = items["raw_id"].to_pylist()
    meta = poison(featured["rank"], str(tmp_path / "p"), "random", fake_users=2,
                  target_items=[raw[9], raw[2]])
    assert meta["poison"]["targets"] == [2, 9]
    check_layout(featured["rank"], str(tmp_path / "p"), meta)
    with pytest.raises(AdvrecError, match="--target-items: item 'nope' is not an item of"):
        poison(featured["rank"], str(tmp_path / "q"), "random", target_items=[raw[1], "nope"])
    assert not (tmp_path / "q").exists()


def test_force_replaces_the_earlier_attack(pairs: str, tmp_path: Path) -> None:
    first = str(tmp_path / "first")
    poison(pairs, first, "random", fake_users=5, seed=1)
    with pytest.raises(AdvrecError, match="already poisoned .random attack.; pass --force"):
        poison(first, str(tmp_path / "again"), "bandwagon")
    assert not (tmp_path / "again").exists()
    # forced: the earlier fakes are dropped, as if the clean dataset were poisoned
    poison(first, str(tmp_path / "again"), "bandwagon", seed=2, force=True)
    poison(pairs, str(tmp_path / "direct"), "bandwagon", seed=2)
    assert digests(str(tmp_path / "again")) == digests(str(tmp_path / "direct"))


def test_hashed_user_ids_refused(tmp_path: Path) -> None:
    root = tmp_path
    prepared_synth(root, 30, 20, 300)
    prepare(str(root / "log"), "parquet", str(root / "hashed"), buckets={"user": 16})
    with pytest.raises(AdvrecError, match="user ids are hashed"):
        poison(str(root / "hashed"), str(root / "p"), "random")


def test_fake_user_count_and_share(pairs: str, tmp_path: Path) -> None:
    assert poison(pairs, str(tmp_path / "a"), "random", fake_users=0.001)["poison"][
        "fake_users"] == 1  # at least one
    assert poison(pairs, str(tmp_path / "a"), "random", fake_users=0.1)["poison"][
        "fake_users"] == 6
    assert poison(pairs, str(tmp_path / "a"), "random", fake_users=1)["poison"]["fake_users"] == 1
    for bad in (0, -3, 0.0, 1.0, 1.5, -0.2):
        with pytest.raises(AdvrecError, match=f"--fake-users {bad}: expected a share"):
            poison(pairs, str(tmp_path / "b"), "random", fake_users=bad)


def test_filler_bounds(pairs: str, tmp_path: Path) -> None:
    # 40 items, 5 targets: 35 fillers at most
    meta = poison(pairs, str(tmp_path / "a"), "random", fake_users=2, filler=35)
    check_layout(pairs, str(tmp_path / "a"), meta)
    with pytest.raises(AdvrecError, match="--filler 36: a profile holds at most the catalogue "
                       "less the targets, 35 items"):
        poison(pairs, str(tmp_path / "b"), "random", filler=36)
    with pytest.raises(AdvrecError, match="--filler -1: expected a whole number >= 0"):
        poison(pairs, str(tmp_path / "b"), "random", filler=-1)
    assert not (tmp_path / "b").exists()


def test_surrogate_is_registered(pairs: str, tmp_path: Path) -> None:
    pytest.importorskip("advrec.poisoning.surrogate")
    meta = poison(pairs, str(tmp_path / "p"), "surrogate", fake_users=2, filler=5, targets=2)
    check_layout(pairs, str(tmp_path / "p"), meta)


def test_object_storage(pairs: str, s3_store: str, tmp_path: Path) -> None:
    import s3fs

    # local to S3, and back: the same bytes as on a local disk
    meta = poison(pairs, "s3://advrec/poisoned", "segment", fake_users=2, seed=5)
    local = str(tmp_path / "local")
    assert poison(pairs, local, "segment", fake_users=2, seed=5) == meta
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    stored = {p.rsplit("/", 1)[-1]: hashlib.sha256(fs.cat(p)).hexdigest()
              for p in fs.find("advrec/poisoned")}
    assert stored == digests(local)
    again = str(tmp_path / "again")
    poison("s3://advrec/poisoned", again, "segment", fake_users=2, seed=5, force=True)
    assert digests(again) == digests(local)
