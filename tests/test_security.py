"""Nothing advrec reads from a file a user hands it is executed: each load path gets a planted
payload (`payloads`), and must refuse it in one line without running it. The CLI-level cases
are in `test_hostile.SECURITY`; these go below the CLI."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from pyarrow.fs import PyFileSystem
from torch.distributed.checkpoint.metadata import BytesStorageMetadata

from advrec import io
from advrec.errors import AdvrecError
from advrec.signing import SUFFIX, SigningHandler, key_path, verify
from advrec.train.checkpoint import load_checkpoint, load_sharded, read_metadata, save_sharded
from payloads import Touch, dotted_pickle, system_pickle

TENSORS = {"model": {"user.weight": torch.arange(12.0).reshape(4, 3), "bias": torch.ones(2)}}


def _saved(tmp_path: Path) -> Path:
    """A real sharded checkpoint directory (torch's dcp) of `TENSORS`."""
    ckpt = tmp_path / "ckpt"
    save_sharded(str(ckpt), TENSORS)
    return ckpt


def _empty() -> dict:
    return {"model": {k: torch.zeros_like(v) for k, v in TENSORS["model"].items()}}


def test_a_real_sharded_checkpoint_loads(tmp_path: Path) -> None:
    # the allow-list admits all that torch's own save pickles (torchrec's layouts too:
    # tests/train/test_sharding.py loads them)
    into = _empty()
    load_sharded(str(_saved(tmp_path)), into)
    for name, tensor in TENSORS["model"].items():
        assert torch.equal(into["model"][name], tensor)


@pytest.mark.parametrize("payload", [
    system_pickle, dotted_pickle, lambda m: dotted_pickle(m, "torch.distributed.checkpoint.metadata")])
def test_a_planted_metadata_pickle_is_refused(payload, tmp_path: Path) -> None:
    ckpt = _saved(tmp_path)
    (ckpt / ".metadata").write_bytes(payload(str(tmp_path / "PWNED")))
    with pytest.raises(AdvrecError, match=rf"^{ckpt}/\.metadata: refused to unpickle: .*system"):
        load_sharded(str(ckpt), _empty())
    assert not (tmp_path / "PWNED").exists()


def _replant(ckpt: Path, change) -> None:
    """Rewrite the checkpoint's (real) metadata after ``change(metadata)``."""
    with open(ckpt / ".metadata", "rb") as f:
        metadata = pickle.load(f)  # the test's own file, just written by torch
    change(metadata)
    with open(ckpt / ".metadata", "wb") as f:
        pickle.dump(metadata, f)


def test_metadata_that_would_unpickle_a_tensor_file_is_refused(tmp_path: Path) -> None:
    # torch's dcp loads an entry declared as bytes with torch.load(weights_only=False): a
    # metadata of allowed-looking classes could point it at a payload in the .distcp file
    ckpt = _saved(tmp_path)
    (ckpt / "__0_0.distcp").write_bytes(system_pickle(str(tmp_path / "PWNED")))
    _replant(ckpt, lambda m: m.state_dict_metadata.update({"model.bias": BytesStorageMetadata()}))
    with pytest.raises(AdvrecError, match="refused to unpickle: .*BytesStorageMetadata"):
        load_sharded(str(ckpt), _empty())
    assert not (tmp_path / "PWNED").exists()


def test_metadata_that_points_outside_its_directory_is_refused(tmp_path: Path) -> None:
    ckpt = _saved(tmp_path)

    def escape(metadata) -> None:
        for info in metadata.storage_data.values():
            info.relative_path = "../../elsewhere.distcp"
    _replant(ckpt, escape)
    with pytest.raises(AdvrecError, match=rf"^{ckpt}/\.metadata: refused: not the metadata"):
        read_metadata(str(ckpt))


def test_a_planted_checkpoint_pickle_is_refused(tmp_path: Path) -> None:
    # torch.load with weights_only: a checkpoint holds tensors and plain values only, whether
    # the payload is a bare pickle or inside torch's own zip format
    (tmp_path / "raw.pt").write_bytes(system_pickle(str(tmp_path / "PWNED")))
    torch.save({"x": Touch(str(tmp_path / "PWNED"))}, tmp_path / "zip.pt")
    for name in ("raw.pt", "zip.pt"):
        with pytest.raises(AdvrecError, match=rf"^{tmp_path}/{name}: refused to unpickle"):
            load_checkpoint(str(tmp_path / name))
    assert not (tmp_path / "PWNED").exists()
    torch.save({"epoch": 3, "model": TENSORS["model"]}, tmp_path / "good.pt")
    assert load_checkpoint(str(tmp_path / "good.pt"))["epoch"] == 3


# --- signatures on what Ray Tune writes (advrec tune --resume) ---------------------------------

@pytest.fixture
def key_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh per-user key directory for the test."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


def _write(handler_fs: PyFileSystem, path: Path | str, data: bytes) -> None:
    with handler_fs.open_output_stream(str(path)) as f:
        f.write(data)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_files_written_through_the_signing_handler_verify(where: str, key_home: Path,
                                                          tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    if where == "s3":
        request.getfixturevalue("s3_store")
        url = f"s3://advrec/signed-{uuid.uuid4().hex[:8]}"
    else:
        url = str(tmp_path / "exp")
    fs, root = io.filesystem(url)
    fs.makedirs(root, exist_ok=True)
    pafs = PyFileSystem(SigningHandler(fs))
    _write(pafs, f"{root}/tuner.pkl", pickle.dumps({"state": 1}))
    pafs.create_dir(f"{root}/trial")
    _write(pafs, f"{root}/trial/params.pkl", b"x" * 100_000)
    pafs.move(f"{root}/trial/params.pkl", f"{root}/trial/moved.pkl")
    pafs.copy_file(f"{root}/tuner.pkl", f"{root}/copy.pkl")
    fs.pipe_file(f"{root}/results.csv", b"not signed, but exempt\n")
    verify(url, lambda name: name == "results.csv")
    assert not fs.exists(f"{root}/trial/params.pkl{SUFFIX}")
    # the key: 32 random bytes only this user reads
    assert key_path() == key_home / "advrec" / "key"
    assert stat.S_IMODE(key_path().stat().st_mode) == 0o600 and len(key_path().read_bytes()) == 32


@pytest.mark.parametrize("attack", ["planted", "changed", "renamed", "other key"])
def test_state_advrec_did_not_sign_is_refused(attack: str, key_home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    fs, _ = io.filesystem(str(exp))
    pafs = PyFileSystem(SigningHandler(fs))
    payload = system_pickle(str(tmp_path / "PWNED"))
    _write(pafs, exp / "params.pkl", pickle.dumps({"lr": 0.1}))
    if attack == "planted":
        (exp / "tuner.pkl").write_bytes(payload)
        culprit = "tuner.pkl"
    elif attack == "changed":
        (exp / "params.pkl").write_bytes(payload)
        culprit = "params.pkl"
    elif attack == "renamed":  # a signed file under another name, with its signature
        os.rename(exp / "params.pkl", exp / "tuner.pkl")
        os.rename(exp / f"params.pkl{SUFFIX}", exp / f"tuner.pkl{SUFFIX}")
        culprit = "tuner.pkl"
    else:  # signed with someone else's key
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "another"))
        culprit = "params.pkl"
    with pytest.raises(AdvrecError, match=rf"^{exp}/{culprit}: refused: not signed by this "
                                          rf"user's advrec key"):
        verify(str(exp), lambda name: False)
    assert not (tmp_path / "PWNED").exists()


def test_a_key_others_can_read_is_refused(key_home: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    key = key_home / "advrec" / "key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"k" * 32)
    key.chmod(0o644)
    with pytest.raises(AdvrecError, match=rf"^{key}: readable by other users"):
        fs, _ = io.filesystem(str(exp))
        _write(PyFileSystem(SigningHandler(fs)), exp / "tuner.pkl", b"state")


@pytest.mark.slow
def test_a_real_search_is_signed_and_resumes_refuse_a_planted_tuner_pickle(
        key_home: Path, tmp_path: Path) -> None:
    # every file Ray Tune writes is signed (a whole search: tuner.pkl, the searcher's state,
    # the trials' parameters and logs); a planted tuner.pkl is then refused, and never run
    log, data, exp = tmp_path / "log", tmp_path / "data", tmp_path / "exp"
    env = {**os.environ, "XDG_CONFIG_HOME": str(key_home)}

    def advrec(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "advrec.cli", *argv], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=600, check=False)

    assert advrec("synth", "--users", "40", "--items", "30", "--interactions", "600",
                  "--output", str(log)).returncode == 0
    assert advrec("prepare", "--input", str(log), "--format", "parquet",
                  "--output", str(data)).returncode == 0
    done = advrec("tune", "--output", str(exp), "--quiet", f"data.source={data}", "model.dim=4",
                  "train.epochs=1", "tune.scheduler=none", "tune.space={train.lr: {grid: [0.05]}}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in exp.glob(f"*{SUFFIX}")} >= {f"tuner.pkl{SUFFIX}"}
    from advrec.tune.search import _unpickled_by_none

    verify(str(exp), _unpickled_by_none)
    (exp / "tuner.pkl").write_bytes(system_pickle(str(tmp_path / "PWNED")))
    done = advrec("tune", "--resume", str(exp), "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"advrec: error: {exp}/tuner.pkl: refused: not signed")
    assert not (tmp_path / "PWNED").exists()


def test_a_pickled_object_column_of_a_features_file_is_refused(tmp_path: Path) -> None:
    # Ray Data's pickled-object column (registered on importing ray.data) unpickles its values
    # when an array of it becomes numpy or Python: a features file holding one is refused
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data.extensions import ArrowPythonObjectType

    from advrec.data.features import load_features

    blobs = pa.array([system_pickle(str(tmp_path / "PWNED"))] * 2, pa.large_binary())
    pq.write_table(pa.table({"index": [0, 1], "age": ArrowPythonObjectType().wrap_array(blobs)}),
                   tmp_path / "user_features.parquet")
    with pytest.raises(AdvrecError, match=rf"^{tmp_path}/user_features.parquet: column 'age' "
                                          rf"has the extension type"):
        load_features(str(tmp_path), "user", 2)
    assert not (tmp_path / "PWNED").exists()
