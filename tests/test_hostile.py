"""The CLI as a hostile user meets it: every bad input, fault and payload, one table.

Each case runs ``advrec`` as a real subprocess and asserts what the README promises of bad input:
the exit code (2; 130 / 143 after SIGINT / SIGTERM), exactly one ``advrec: error:`` line that
names the culprit and no traceback, nothing left at the output, the user's files untouched, and
no marker file from a planted payload (a payload, if ever executed, touches ``{d}/PWNED``).

Placeholders in a case's arguments: ``{d}`` the case's own empty directory, ``{log}`` a raw
synthetic log (Parquet, from ``advrec synth``), ``{data}`` that log prepared, ``{run}`` a finished
MF run on it. The shared ones are read-only: a case that alters one copies it first
(`copy_run`). The count of cases is written in README.md under "Reliability".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from advrec.cli import main

Setup = Callable[["Places"], None]


@dataclass(frozen=True)
class Places:
    """Where a case runs: its own directory and the shared read-only inputs."""

    d: Path
    log: Path
    data: Path
    run: Path

    def fill(self, text: str) -> str:
        return text.format(d=self.d, log=self.log, data=self.data, run=self.run)


@dataclass(frozen=True)
class Case:
    """One hostile input. ``culprit``: a text the one error line must contain. ``absent``: paths
    that must not exist afterwards. ``unchanged``: paths (files or trees) whose contents must be
    the same afterwards. ``signal``: send it once stdout shows ``after``."""

    id: str
    argv: tuple[str, ...]
    culprit: str
    setup: Setup | None = None
    code: int = 2
    absent: tuple[str, ...] = ("{d}/out",)
    unchanged: tuple[str, ...] = ()
    signal: int | None = None
    after: str = ""
    env: dict[str, str] = field(default_factory=dict)


def write(name: str, text: str | bytes) -> Setup:
    """A setup that writes ``text`` to ``{d}/name``."""
    def setup(p: Places) -> None:
        path = p.d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return setup


def copy_run(name: str = "run") -> Setup:
    """A setup that copies the finished run to ``{d}/name``."""
    def setup(p: Places) -> None:
        shutil.copytree(p.run, p.d / name)
    return setup


def both(*setups: Setup) -> Setup:
    def setup(p: Places) -> None:
        for s in setups:
            s(p)
    return setup


def log_with(name: str, column: str, values: Callable[[list], list]) -> Setup:
    """A setup that writes ``{d}/name``: the shared raw log (Parquet) with ``column`` replaced
    by ``values(its values)``, as pyarrow infers them (a float with NaN, lists, structs)."""
    def setup(p: Places) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(p.log)
        column_values = values(table[column].to_pylist())
        (p.d / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.set_column(table.schema.get_field_index(column), column,
                                        pa.array(column_values)), p.d / name)
    return setup


def edit(name: str, old: str, new: str) -> Setup:
    """A setup that replaces ``old`` by ``new`` in the file ``{d}/name`` (made by an earlier
    setup: a copied run's config.yaml)."""
    def setup(p: Places) -> None:
        path = p.d / name
        assert old in path.read_text()
        path.chmod(0o644)
        path.write_text(path.read_text().replace(old, new))
    return setup


TRAIN = ("train", "--output", "{d}/out", "data.source={data}", "model.dim=8", "train.epochs=1")

# --- security: nothing from a run directory or a config is ever executed ----------------------
SECURITY: list[Case] = [
]

# --- outputs: never delete what advrec did not write; no half-written output -----------------
OUTPUTS: list[Case] = [
    Case("prepare-missing-input", ("prepare", "--input", "{d}/nope", "--format", "parquet",
                                   "--output", "{d}/out"), "{d}/nope"),
]

# --- config: keys, values, YAML -----------------------------------------------------------------
CONFIG: list[Case] = [
    Case("train-unknown-key", (*TRAIN, "adv.nope=1"), "adv.nope"),
    Case("train-config-missing", ("train", "--config", "{d}/missing.yaml", "--output", "{d}/out"),
         "{d}/missing.yaml"),
]

# --- data: columns, types, values ----------------------------------------------------------------
DATA: list[Case] = [
    Case("prepare-nan-user-id", ("prepare", "--input", "{d}/log.parquet", "--format", "parquet",
                                 "--output", "{d}/out"),
         "column 'user_id' has 2 missing (null, NaN or empty) ids",
         setup=log_with("log.parquet", "user_id",
                        lambda v: [float("nan") if j in (3, 7) else float(u)
                                   for j, u in enumerate(v)])),
    Case("prepare-list-id", ("prepare", "--input", "{d}/log.parquet", "--format", "parquet",
                             "--output", "{d}/out"), "id column 'item_id' has type list<",
         setup=log_with("log.parquet", "item_id", lambda v: [[i] for i in v])),
    Case("prepare-struct-id", ("prepare", "--input", "{d}/log.parquet", "--format", "parquet",
                               "--output", "{d}/out"), "id column 'user_id' has type struct<",
         setup=log_with("log.parquet", "user_id", lambda v: [{"id": u} for u in v])),
    Case("prepare-empty-sep", ("prepare", "--input", "{d}/log.csv", "--format", "csv",
                               "--sep", "", "--output", "{d}/out"), "--sep",
         setup=write("log.csv", "user_id,item_id\n1,2\n")),
    Case("prepare-read-only-output", ("prepare", "--input", "{log}", "--format", "parquet",
                                      "--output", "/sys/advrec-hostile-out"),
         "/sys/advrec-hostile-out", absent=("/sys/advrec-hostile-out",)),
    Case("train-read-only-output", ("train", "--output", "/sys/advrec-hostile-out",
                                    "data.source={data}", "model.dim=8", "train.epochs=1"),
         "/sys/advrec-hostile-out", absent=("/sys/advrec-hostile-out",)),
    Case("train-huge-dim", ("train", "--output", "{d}/out", "data.source={data}",
                            "model.dim=1000000000", "train.epochs=1"),
         "model.dim=1000000000: the embedding tables and their adam state need at least"),
    Case("evaluate-edited-dim", ("evaluate", "--run", "{d}/run"),
         "'user.weight' has shape [60, 8], but [60, 16]",
         setup=both(copy_run(), edit("run/config.yaml", "dim: 8", "dim: 16")),
         absent=("{d}/run/robustness.json",)),
    Case("train-non-finite-loss", (*TRAIN, "adv.method=fgm", "adv.eps=1e30"),
         "at epoch 1, step 1: training diverged"),
    Case("train-non-finite-loss-workers", (*TRAIN, "adv.method=fgm", "adv.eps=1e30",
                                           "scaling.num_workers=2"),
         "at epoch 1, step 1: training diverged"),
]

# --- storage, resources and signals -------------------------------------------------------------
RUNTIME: list[Case] = [
]

CASES = [*SECURITY, *OUTPUTS, *CONFIG, *DATA, *RUNTIME]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A raw synthetic log, it prepared, and a finished 1-epoch MF run on it."""
    root = tmp_path_factory.mktemp("hostile")
    log, data, run = root / "log", root / "data", root / "run"
    assert main(["synth", "--users", "60", "--items", "40", "--interactions", "1200",
                 "--output", str(log)]) == 0
    assert main(["prepare", "--input", str(log), "--format", "parquet", "--output", str(data)]) == 0
    assert main(["train", "--output", str(run), "--quiet", f"data.source={data}", "model.dim=8",
                 "train.epochs=1", "eval.ks=[5]"]) == 0
    for path in (log, data, run):  # read-only for the cases: a case that alters one copies it
        for f in path.rglob("*"):
            f.chmod(f.stat().st_mode & ~0o222)
    return log, data, run


def _digest(path: Path) -> str:
    """The contents of a file or a tree, as one hash (missing: '')."""
    if not path.exists():
        return ""
    h = hashlib.sha256()
    for f in sorted([path] if path.is_file() else path.rglob("*")):
        h.update(str(f.relative_to(path.parent)).encode())
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


def _run(case: Case, places: Places) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "advrec.cli", *(places.fill(a) for a in case.argv)]
    env = {**os.environ, **{k: places.fill(v) for k, v in case.env.items()}}
    if case.signal is None:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=places.d,
                              timeout=300)
        return done.returncode, done.stdout, done.stderr
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=places.d)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if case.after in line:
            proc.send_signal(case.signal)
            break
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, "".join(out) + stdout, stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, shared: tuple[Path, Path, Path], tmp_path: Path) -> None:
    places = Places(tmp_path, *shared)
    if case.setup is not None:
        case.setup(places)
    before = {u: _digest(Path(places.fill(u))) for u in case.unchanged}

    code, out, err = _run(case, places)

    errors = [line for line in err.splitlines() if line.startswith("advrec: error:")]
    assert code == case.code, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-4000:]}"
    assert "Traceback" not in err, err[-4000:]
    assert len(errors) == 1, err[-4000:]
    assert places.fill(case.culprit) in errors[0]
    assert len(errors[0]) < 1000, errors[0][:300]  # one line a person reads, not a dump
    for path in case.absent:
        assert not Path(places.fill(path)).exists(), f"{places.fill(path)} left behind"
    for path, digest in before.items():
        assert _digest(Path(places.fill(path))) == digest, f"{places.fill(path)} changed"
    assert not (tmp_path / "PWNED").exists(), "a payload ran"


def test_enough_cases() -> None:
    """README.md's "Reliability" section states how many hostile inputs the table holds."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{len(CASES)} hostile inputs" in readme
