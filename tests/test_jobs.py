"""Jobs and clusters: job specs, `advrec submit` / `advrec jobs` against a real Ray head, and the
shipped cluster configs (Ray's own launcher validation, KubeRay manifests)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from advrec.cli import main
from advrec.submit import load_job
from conftest import S3_KEY, S3_SECRET
from errors import error_line

ROOT = Path(__file__).resolve().parents[1]
IMAGE_CHECKOUT = "/home/ray/advrec/"  # where cluster/Dockerfile puts this repository


def _yaml_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.yaml"))


def _advrec(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advrec.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


# --- the shipped files ------------------------------------------------------------------------

@pytest.mark.parametrize("path", _yaml_files("cluster") + _yaml_files("jobs"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_parses(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_configs_pass_rays_own_validation(name: str) -> None:
    # what `ray up` does before it contacts the cloud: fill in the provider's defaults, validate
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((ROOT / "cluster" / name).read_text()))
    validate_config(config)
    head = config["head_node_type"]
    workers = [t for n, t in config["available_node_types"].items() if n != head]
    assert workers and all(t["min_workers"] == 0 for t in workers)  # they scale from zero
    assert any("advrec" in c for c in config["setup_commands"])  # installs advrec
    # the job server is not opened to the world, and it takes only token-bearing requests
    assert all("RAY_AUTH_MODE=token" in c for c in
               config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:])


def _manifests() -> dict[str, dict]:
    docs = [d for p in _yaml_files("cluster/kuberay") for d in yaml.safe_load_all(p.read_text())]
    assert all(d["apiVersion"] == "ray.io/v1" for d in docs)
    return {d["kind"]: d for d in docs}


def test_kuberay_cluster_has_a_gpu_group_and_takes_credentials_from_a_secret() -> None:
    cluster = _manifests()["RayCluster"]["spec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    groups = cluster["workerGroupSpecs"]
    gpu = [g for g in groups for c in g["template"]["spec"]["containers"]
           if "nvidia.com/gpu" in c["resources"]["limits"]]
    assert gpu and gpu[0]["minReplicas"] == 0
    pods = [cluster["headGroupSpec"]["template"], *(g["template"] for g in groups)]
    for pod in pods:
        for container in pod["spec"]["containers"]:
            assert any("secretRef" in e for e in container["envFrom"])
            assert not any(e.get("name", "").startswith("AWS_SECRET") and "value" in e
                           for e in container.get("env", []))


def test_kuberay_job_runs_an_existing_job_spec_on_the_cluster() -> None:
    manifests = _manifests()
    job = manifests["RayJob"]["spec"]
    assert job["clusterSelector"]["ray.io/cluster"] == manifests["RayCluster"]["metadata"]["name"]
    words = shlex.split(job["entrypoint"])
    assert words[:2] == ["advrec", "run"]
    spec = words[2]
    assert spec.startswith(IMAGE_CHECKOUT) and (ROOT / spec.removeprefix(IMAGE_CHECKOUT)).is_file()
    load_job(str(ROOT / spec.removeprefix(IMAGE_CHECKOUT)), words[3:])  # and it is valid


@pytest.mark.parametrize("spec", sorted((ROOT / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_job_spec_resolves_to_a_valid_run(spec: Path) -> None:
    job = load_job(str(spec), [])
    words = shlex.split(job.entrypoint("x"))
    assert words[:2] == ["advrec", job.spec.command]
    assert words[words.index("--output") + 1] == job.output_url("x")
    assert yaml.safe_load(job.config_text)["data"]["source"]


def test_local_source_and_targets_become_absolute(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.yaml").write_text("data: {source: log.data, format: movielens}\n")
    spec = _spec(tmp_path, "command: train\nconfig: c.yaml\nstorage: out\n")
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(load_job(str(spec), ["eval.targets=t.json"]).config_text)
    assert config["data"]["source"] == str(tmp_path / "log.data")
    assert config["eval"]["targets"] == str(tmp_path / "t.json")
    url = yaml.safe_load(load_job(str(spec), ["eval.targets=s3://b/t.json"]).config_text)
    assert url["eval"]["targets"] == "s3://b/t.json"


# --- bad input --------------------------------------------------------------------------------

def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, culprit", [
    ("command: train\nconfig: c.yaml\nstorage: out\nworkdir: .\n", "workdir: unknown config key"),
    ("command: evaluate\nconfig: c.yaml\nstorage: out\n", "command: Input should be 'train', 'tune' or 'stream'"),
    ("command: train\nconfig: missing.yaml\nstorage: out\n",
     "config: missing.yaml: config file not found"),
    ("command: train\nconfig: c.yaml\nstorage: out\noverrides: {adv.epsilon: 1}\n",
     "adv.epsilon: unknown config key"),
    ("command: train\nconfig: c.yaml\nstorage: out\nresources: {num_cpus: -1}\n",
     "resources.num_cpus"),
    ("- command: train\n", "spec.yaml: a job spec must be a YAML mapping"),
    ("command: stream\nconfig: c.yaml\nstorage: out\nflags: [--wndow, 7d]\n",
     "flags: --wndow 7d is not a flag of `advrec stream`"),
    ("command: stream\nconfig: c.yaml\nstorage: out\n",
     "flags: a stream takes --window (a log replayed) or --follow"),
    ("command: stream\nconfig: c.yaml\nstorage: out\nflags: [--follow, --window, 7d]\n",
     "flags: a stream takes --window (a log replayed) or --follow"),
    ("command: stream\nconfig: c.yaml\nstorage: out\nflags: [--window, 1w]\n",
     "flags: --window: '1w' is not a window"),
    ("command: stream\nconfig: c.yaml\nstorage: out\nflags: [--follow, --poll, '-1']\n",
     "flags: stream: argument --poll"),
    ("command: train\nconfig: c.yaml\nstorage: out\nflags: [train.lr=1]\n",
     "flags: train.lr=1 is not a flag of `advrec train` (config keys go under overrides)"),
])
def test_a_bad_spec_fails_before_contacting_a_cluster(
        tmp_path: Path, text: str, culprit: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "c.yaml").write_text("data: {source: log.data, format: movielens}\n")
    # an address nothing listens on: the spec's error must come first
    code = main(["submit", str(_spec(tmp_path, text)), "--address", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    line = error_line(err)
    assert code == 2 and line and culprit in line, err
    assert not (tmp_path / "out").exists()


def test_a_stream_spec_runs_the_stream_it_names(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from advrec.data.synth import synth_days

    synth_days(40, 60, 600, str(tmp_path / "log"), days=2, seed=0)
    (tmp_path / "c.yaml").write_text(f"data: {{source: {tmp_path / 'log'}}}\n"
                                     "model: {name: mf, dim: 8}\ntrain: {epochs: 1}\n")
    spec = _spec(tmp_path, f"command: stream\nconfig: c.yaml\nstorage: {tmp_path / 'out'}\n"
                 "flags: [--follow, --poll, '0.2', --idle, '0.5', --quiet]\n")
    assert main(["run", str(spec)]) == 0
    (stream,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    history = json.loads((stream / "stream_history.json").read_text())
    assert [r["window"] for r in history] == ["2020-01-01", "2020-01-02"]
    assert "ndcg@20" in history[1]["prequential"]
    assert "stream written to" in capsys.readouterr().out


def test_an_unreachable_job_server_is_one_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from advrec.ports import free_ports

    (tmp_path / "c.yaml").write_text("data: {source: log.data, format: movielens}\n")
    spec = _spec(tmp_path, "command: train\nconfig: c.yaml\nstorage: out\n")
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    assert main(["submit", str(spec), "--address", dead]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert line and f"{dead}: no Ray job server answers there" in line
    assert not (tmp_path / "out").exists()  # nothing written for a job never submitted
    assert main(["jobs", "list", "--address", dead]) == 2


# --- against a real head ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def head(s3_store: str) -> Iterator:
    """A Ray head with its job server (`advrec.local_head`), started after the S3 store so its
    jobs inherit the store's endpoint and credentials. Stopping it leaves the test session's own
    Ray instance alone."""
    import tempfile

    from advrec.local_head import local_head

    with tempfile.TemporaryDirectory(prefix="rh-", dir="/tmp") as tmp, \
            local_head(Path(tmp), num_cpus=2, env={"OMP_NUM_THREADS": "1"}) as running:
        yield running


TINY = """\
data: {{source: {source}, format: movielens}}
model: {{name: mf, dim: 8}}
adv: {{method: fgm, eps: 0.5, start_epoch: 1}}
train: {{epochs: 2, batch_size: 512, lr: 0.01, patience: 0}}
eval: {{eps: [0.0, 0.5], steps: 2}}
scaling: {{num_workers: 1}}
"""


def test_submit_waits_for_a_training_job_and_its_outputs_land_in_storage(
        head, udata_small: Path, tmp_path: Path) -> None:
    import s3fs

    (tmp_path / "tiny.yaml").write_text(TINY.format(source=udata_small))
    spec = _spec(tmp_path, "command: train\nconfig: tiny.yaml\nstorage: s3://advrec/jobs\n"
                 "runtime_env: {env_vars: {ADVREC_JOB_TEST: 'yes'}}\n")
    env = head.client_env()
    done = _advrec("submit", str(spec), "--address", head.url, "--wait", "train.epochs=3",
                   env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    job_id = out.split("submitted ", 1)[1].split()[0]
    assert f"outputs: s3://advrec/jobs/{job_id}" in out
    assert "epoch 3/3" in out  # the job's logs, streamed; the override reached the run
    assert f"job {job_id} SUCCEEDED" in out

    store = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, skip_instance_cache=True,
                              endpoint_url=env["AWS_ENDPOINT_URL"])
    assert yaml.safe_load(store.cat(f"advrec/jobs/{job_id}.yaml"))["train"]["epochs"] == 3
    for name in ("metrics.json", "history.json", "config.yaml", "run.json"):
        assert store.exists(f"advrec/jobs/{job_id}/{name}"), name

    status = _advrec("jobs", "status", job_id, "--address", head.url, env=env)
    assert status.returncode == 0 and "status: SUCCEEDED" in status.stdout
    assert f"output: s3://advrec/jobs/{job_id}" in status.stdout
    listed = _advrec("jobs", "list", "--address", head.url, env=env)
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = _advrec("jobs", "logs", job_id, "--address", head.url, env=env)
    assert "epoch 3/3" in logs.stdout
    unknown = _advrec("jobs", "status", "no-such-job", "--address", head.url, env=env)
    assert unknown.returncode == 2 and "no-such-job: no such job" in unknown.stderr


def test_a_job_that_fails_on_the_cluster_gives_a_non_zero_exit(
        head, udata_small: Path, tmp_path: Path) -> None:
    # valid where it is submitted; on the cluster its log is missing
    (tmp_path / "tiny.yaml").write_text(TINY.format(source=tmp_path / "gone" / "u.data"))
    spec = _spec(tmp_path, f"command: train\nconfig: tiny.yaml\nstorage: {tmp_path / 'out'}\n")
    done = _advrec("submit", str(spec), "--address", head.url, "--wait", env=head.client_env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout and "not found" in done.stdout  # advrec's one-line error
    job_id = done.stdout.split("submitted ", 1)[1].split()[0]
    assert not (tmp_path / "out" / job_id / "metrics.json").exists()


def test_a_client_without_the_token_is_refused(head, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("data: {source: log.data, format: movielens}\n")
    spec = _spec(tmp_path, "command: train\nconfig: c.yaml\nstorage: out\n")
    env = {**head.client_env(), "RAY_AUTH_TOKEN": "wrong"}
    done = _advrec("submit", str(spec), "--address", head.url, env=env, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"advrec: error: {head.url}")
    assert not (tmp_path / "out").exists()


def test_only_the_job_servers_answers_become_one_line(head) -> None:
    # an unknown job is the server's 404, which Ray's client raises as a bare RuntimeError:
    # advrec's client raises its own type for it (so this fails loudly if Ray stops calling
    # the hook), and a RuntimeError of anything else, a bug, is not taken for the server's
    from advrec.submit.client import _call

    done = _advrec("jobs", "status", "no-such-job", "--address", head.url, env=head.client_env(),
                   timeout=60)
    assert done.returncode == 2 and done.stderr == "advrec: error: no-such-job: no such job " \
        "on this server\n", done.stderr

    def bug() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="^a bug$"):
        _call("job", bug)


def test_a_running_job_is_stopped(head, udata_small: Path, tmp_path: Path) -> None:
    import time

    (tmp_path / "tiny.yaml").write_text(TINY.format(source=udata_small))
    spec = _spec(tmp_path, f"command: train\nconfig: tiny.yaml\nstorage: {tmp_path / 'out'}\n")
    env = head.client_env()
    done = _advrec("submit", str(spec), "--address", head.url, "train.epochs=500", env=env)
    assert done.returncode == 0 and "advrec jobs logs" in done.stdout  # not waited for
    job_id = done.stdout.split("submitted ", 1)[1].split()[0]
    stopped = _advrec("jobs", "stop", job_id, "--address", head.url, env=env)
    assert stopped.returncode == 0 and f"{job_id}: stop requested" in stopped.stdout
    deadline = time.monotonic() + 60
    while "status: STOPPED" not in (status := _advrec("jobs", "status", job_id, "--address",
                                                      head.url, env=env)).stdout:
        assert time.monotonic() < deadline, status.stdout
        time.sleep(1)
    assert status.returncode == 1  # as `submit --wait` ends for a stopped job
    assert not (tmp_path / "out" / job_id / "metrics.json").exists()
