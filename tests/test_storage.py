"""Object storage through one code path: prepare, train and evaluate against a real S3 endpoint
(SeaweedFS on 127.0.0.1, the `s3_store` fixture), and clear errors, within seconds, for a
missing bucket, refused credentials and an unreachable endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs

from advrec.cli import main
from advrec.ports import free_ports
from conftest import S3_SECRET


def test_prepare_train_and_evaluate_on_s3(s3_store: str, udata_small: Path) -> None:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(udata_small), "advrec/raw/u.data")
    data, run = "s3://advrec/prepared/small", "s3://advrec/runs/mf"
    assert main(["prepare", "--input", "s3://advrec/raw/u.data", "--format", "movielens",
                 "--output", data]) == 0
    assert main(["train", "--output", run, "--quiet", f"data.source={data}", "model.name=mf",
                 "model.dim=16", "adv.method=fgm", "adv.eps=0.1", "adv.relative=true",
                 "train.epochs=2", "train.lr=0.01"]) == 0
    assert main(["evaluate", "--run", run, "--attack", "fgm", "--eps", "0,0.5", "--steps", "2",
                 "--quiet"]) == 0
    written = {p.rsplit("/", 1)[-1] for p in fs.find("advrec/runs/mf")}
    assert {"config.yaml", "run.json", "model.pt", "epoch-000001.pt", "history.json",
            "metrics.json", "robustness.json", "robustness.png"} <= written
    assert not any(".tmp-" in p for p in fs.find("advrec"))  # every write was committed
    metrics = json.loads(fs.cat("advrec/runs/mf/metrics.json"))
    curve = json.loads(fs.cat("advrec/runs/mf/robustness.json"))
    assert curve["fgm"]["0.0"]["ndcg@10"] == pytest.approx(metrics["test"]["ndcg@10"], abs=1e-6)


def _cli(args: list[str], **env: str) -> tuple[int, str, float]:
    """Run ``advrec`` in a fresh process (a fresh S3 client) with ``env`` on top of this one's."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "advrec.cli", *args], capture_output=True,
                          check=False,
                          text=True, env={**os.environ, **env}, timeout=120)
    return done.returncode, done.stderr.strip(), time.monotonic() - start


def test_bad_buckets_credentials_and_endpoints_fail_fast(s3_store: str, udata_small: Path,
                                                         tmp_path: Path) -> None:
    prepare = ["prepare", "--input", str(udata_small), "--format", "movielens", "--output"]
    code, err, _ = _cli([*prepare, "s3://no-such-bucket/data"])
    assert code == 2 and err == "advrec: error: s3://no-such-bucket at " \
        f"{s3_store}: no such bucket"

    code, err, _ = _cli([*prepare, "s3://advrec/data"], AWS_SECRET_ACCESS_KEY="wrong-secret")
    assert code == 2 and err.startswith(f"advrec: error: s3://advrec at {s3_store}: access denied")
    assert "wrong-secret" not in err and S3_SECRET not in err  # never a secret in a message

    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    code, err, seconds = _cli(["train", "--output", "s3://advrec/runs/x",
                               f"data.source={tmp_path}"], AWS_ENDPOINT_URL=dead)
    assert code == 2 and err.startswith(f"advrec: error: s3://advrec at {dead}: cannot reach")
    assert seconds < 30  # not botocore's minute of retries
    assert "\n" not in err
