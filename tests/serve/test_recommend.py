"""`advrec recommend`: top-K lists equal to brute force over the whole catalogue, block by block,
seen items left out, unknown users, SASRec from the whole history, 2 Ray Train workers, and the
bad input (the hostile cases hold the rest)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from advrec.cli import main
from advrec.config import dump_config, load_config
from advrec.data import load_dataset
from advrec.serve.recommend import seen_items, top_k, vocabulary
from advrec.train import load_model, read_run
from advrec.train.checkpoint import model_url
from advrec.train.tasks import NEXT, make_task
from errors import error_line
from recs import read_lists, train_run


@pytest.fixture(scope="module")
def mf_run(tiny_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(tiny_log, tmp_path_factory.mktemp("mf") / "run")


def _brute_force(run: Path, k: int, keep_seen: bool = False) -> dict[str, list[str]]:
    """Every user's top-k raw item ids: all items scored at once, ``torch.topk``."""
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    model, _ = load_model(model_url(str(run)), cfg, data)
    model.eval()
    users = torch.arange(data.num_users)
    with torch.no_grad():
        scores = model.rank_scores(make_task(cfg, data).context(users, NEXT))
    if not keep_seen:
        for split in ("known", "train", "valid", "test"):
            for u, i in zip(data.split(split).user.tolist(), data.split(split).item.tolist()):
                scores[u, i] = -torch.inf
    best, items = torch.topk(scores, k, dim=1)
    user_ids, item_ids = vocabulary(dataset, "user").to_pylist(), vocabulary(dataset, "item")
    # a user with fewer than k unseen items gets a shorter list
    lists = {user_ids[u]: [item_ids[i].as_py() for i, s in zip(items[u].tolist(), best[u])
                           if s > -torch.inf] for u in range(len(users))}
    return {u: items for u, items in lists.items() if items}  # no rows for one who has seen all


def test_equals_brute_force_with_seen_items_left_out(mf_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(mf_run), "--k", "5", "--output", str(out),
                 "--quiet"]) == 0
    lists = read_lists(out)
    assert lists == _brute_force(mf_run, 5)
    _, dataset = read_run(str(mf_run))
    data = load_dataset(dataset)
    users, items = vocabulary(dataset, "user").to_pylist(), vocabulary(dataset, "item")
    train = {(users[u], items[i].as_py()) for u, i in zip(data.train.user.tolist(),
                                                           data.train.item.tolist())}
    assert not any((u, i) in train for u, lst in lists.items() for i in lst)

    kept = tmp_path / "kept.parquet"
    assert main(["recommend", "--run", str(mf_run), "--k", "5", "--keep-seen", "--output",
                 str(kept), "--quiet"]) == 0
    assert read_lists(kept) == _brute_force(mf_run, 5, keep_seen=True) != lists


def test_blocks_of_the_catalogue_give_the_same_lists(mf_run: Path) -> None:
    cfg, dataset = read_run(str(mf_run))
    data = load_dataset(dataset)
    model, _ = load_model(model_url(str(mf_run)), cfg, data)
    users = torch.arange(data.num_users)
    context = make_task(cfg, data).context(users, NEXT)
    whole = top_k(model, context, users, 7, data.num_items, seen_items(data))
    real = torch.isfinite(whole[0])  # -inf: a user with fewer than 7 unseen items
    assert real.sum() > 7 * data.num_users // 2
    for block in (1, 4, 13):
        scores, items = top_k(model, context, users, 7, block, seen_items(data))
        assert torch.equal(torch.isfinite(scores), real)
        assert torch.equal(items[real], whole[1][real])
        assert torch.allclose(scores[real], whole[0][real])


def test_unknown_users_get_the_popular_items_or_an_error(
        mf_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, dataset = read_run(str(mf_run))
    data = load_dataset(dataset)
    # two users with unseen items (the log's most active have seen every item)
    active = torch.bincount(data.train.user, minlength=data.num_users)
    known = [vocabulary(dataset, "user")[u].as_py() for u in torch.argsort(active)[:2].tolist()]
    listed = tmp_path / "users.txt"
    listed.write_text(f"{known[0]}\nnobody\n\n{known[1]}\n{known[0]}\n")
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(mf_run), "--users", str(listed), "--k", "3",
                 "--output", str(out), "--quiet"]) == 0
    rows = pq.read_table(out).to_pylist()
    # in the order listed, each once
    assert [r["user"] for r in rows] == [known[0]] * 3 + ["nobody"] * 3 + [known[1]] * 3
    cold = [r for r in rows if r["user"] == "nobody"]
    assert all(r["fallback"] for r in cold)
    assert not any(r["fallback"] for r in rows if r["user"] != "nobody")
    counts = torch.bincount(data.train.item, minlength=data.num_items)
    assert [r["score"] for r in cold] == sorted(counts.tolist(), reverse=True)[:3]

    capsys.readouterr()
    strict = tmp_path / "strict.parquet"
    assert main(["recommend", "--run", str(mf_run), "--users", str(listed), "--unknown",
                 "error", "--output", str(strict)]) != 0
    line = error_line(capsys.readouterr().err)
    assert line == (f"advrec: error: --users {listed}: user 'nobody' is not a user of the run; "
                    "--unknown popular gives such users the most popular items")
    assert not strict.exists() and not list(tmp_path.glob("strict.parquet*"))


def test_sasrec_ranks_from_the_whole_history(tiny_log: Path, tmp_path: Path) -> None:
    run = train_run(tiny_log, tmp_path / "sasrec", "model.name=sasrec", "model.max_len=10",
               "data.split=loo")
    out = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(run), "--k", "4", "--output", str(out),
                 "--quiet"]) == 0
    assert read_lists(out) == _brute_force(run, 4)


def test_two_workers_give_the_same_lists(mf_run: Path, tmp_path: Path, ray_local: None) -> None:
    alone, two = tmp_path / "alone.parquet", tmp_path / "two.parquet"
    for path, workers in ((alone, "0"), (two, "2")):
        assert main(["recommend", "--run", str(mf_run), "--k", "5", "--workers", workers,
                     "--batch-users", "7", "--output", str(path), "--quiet"]) == 0
    a, b = pq.read_table(alone).to_pydict(), pq.read_table(two).to_pydict()
    scores = a.pop("score"), b.pop("score")  # a Ray worker's one thread sums in another order
    assert a == b and scores[1] == pytest.approx(scores[0], rel=1e-5)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_ctr_run_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(None, ["data.source=log", "model.name=deepfm"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "run.json").write_text(json.dumps({"advrec": "0", "dataset": str(tmp_path / "d")}))
    assert main(["recommend", "--run", str(run), "--output", str(tmp_path / "r.parquet")]) != 0
    assert error_line(capsys.readouterr().err) == (
        "advrec: error: --run: model.name=deepfm scores (user, item) pairs for ctr, not top-K "
        "lists; `advrec recommend` ranks with mf, neumf, sasrec, twotower runs; --pairs FILE "
        "scores given pairs")


def test_pairs_get_the_scores_recommend_ranks_by(mf_run: Path, tmp_path: Path) -> None:
    recs = tmp_path / "recs.parquet"
    assert main(["recommend", "--run", str(mf_run), "--k", "3", "--output", str(recs),
                 "--quiet"]) == 0
    listed = pq.read_table(recs).to_pylist()[:6]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("item,user\n" + "".join(f"{r['item']},{r['user']}\n" for r in listed))
    scores = tmp_path / "scores.parquet"
    assert main(["recommend", "--run", str(mf_run), "--pairs", str(pairs), "--output",
                 str(scores)]) == 0
    got = pq.read_table(scores).to_pylist()
    assert [(r["user"], r["item"]) for r in got] == [(r["user"], r["item"]) for r in listed]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in listed], rel=1e-5)


def test_a_ctr_models_pairs_get_click_probabilities(ctr_small: str, feature_options: dict,
                                                    tmp_path: Path) -> None:
    options = [f"data.{k}=[{', '.join(v)}]" for k, v in feature_options.items()]
    run = train_run(Path(ctr_small), tmp_path / "deepfm", "model.name=deepfm", *options)
    cfg, dataset = read_run(str(run))
    data = load_dataset(dataset)
    model, _ = load_model(model_url(str(run)), cfg, data)
    users, items = vocabulary(dataset, "user"), vocabulary(dataset, "item")
    pairs = tmp_path / "pairs.parquet"
    # users 0-4 each with item of the same index, by raw id (the user column typed as numbers)
    pq.write_table(pa.table({"user": pa.array([int(users[u].as_py()) for u in range(5)]),
                             "item": items.slice(0, 5)}), pairs)
    out = tmp_path / "scores.parquet"
    assert main(["recommend", "--run", str(run), "--pairs", str(pairs), "--output",
                 str(out)]) == 0
    got = pq.read_table(out).to_pylist()
    with torch.no_grad():
        logits = model.score_candidates({"user": torch.arange(5)}, torch.arange(5).unsqueeze(1))
    assert [r["score"] for r in got] == pytest.approx(logits[:, 0].tolist(), rel=1e-5)
    assert [r["probability"] for r in got] == pytest.approx(
        torch.sigmoid(logits[:, 0]).tolist(), rel=1e-5)


def test_users_files_as_people_write_them(mf_run: Path, tmp_path: Path) -> None:
    """pandas' integers with a null (floats), a byte-order mark and CRLF: each id is the user
    it names, not an unknown one."""
    _, dataset = read_run(str(mf_run))
    vocab = vocabulary(dataset, "user").to_pylist()
    numbered = [int(v) for v in vocab[:2]]  # synth's raw ids are numbers
    floats, bom = tmp_path / "floats.parquet", tmp_path / "bom.txt"
    pq.write_table(pa.table({"user": pa.array([float(numbered[0]), None, float(numbered[1])])}),
                   floats)
    bom.write_bytes(b"\xef\xbb\xbf" + f"{numbered[0]}\r\n{numbered[1]}\r\n".encode())
    for users in (floats, bom):
        out = tmp_path / f"{users.stem}.parquet.out"
        assert main(["recommend", "--run", str(mf_run), "--users", str(users), "--k", "2",
                     "--output", str(out), "--quiet"]) == 0
        rows = pq.read_table(out).to_pylist()
        assert {r["user"] for r in rows} <= {str(n) for n in numbered}, users
        assert not any(r["fallback"] for r in rows), users


def test_a_storage_error_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only or full disk under the output: one line naming the file."""
    import errno

    from advrec.serve import recommend

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", "/mnt/ro/recs.parquet.tmp-1")

    monkeypatch.setattr(recommend, "recommend_run", read_only)
    assert main(["recommend", "--run", "r", "--output", "/mnt/ro/recs.parquet"]) == 2
    assert error_line(capsys.readouterr().err) == (
        "advrec: error: /mnt/ro/recs.parquet.tmp-1: cannot be written (Read-only file system)")
