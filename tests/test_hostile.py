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

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
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
    (globs) that must not exist afterwards. ``unchanged``: paths (files or trees) whose contents must be
    the same afterwards. ``signal``: send it once stdout shows ``after`` or, with
    ``after_file``, once a path matches that glob."""

    id: str
    argv: tuple[str, ...]
    culprit: str
    setup: Setup | None = None
    code: int = 2
    absent: tuple[str, ...] = ("{d}/out", "{d}/out.tmp-*")
    unchanged: tuple[str, ...] = ()
    signal: int | None = None
    after: str = ""
    after_file: str = ""
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


def copy(what: str, name: str) -> Setup:
    """A setup that copies the shared ``what`` (log, data or run) to ``{d}/name``."""
    def setup(p: Places) -> None:
        shutil.copytree(getattr(p, what), p.d / name)
    return setup


def big_log(p: Places) -> None:
    """A raw Parquet log of 300k random interactions at ``{d}/big``: `prepare` takes a while,
    long enough to be interrupted while it writes."""
    rng = np.random.default_rng(0)
    n = 300_000
    (p.d / "big").mkdir()
    pq.write_table(pa.table({"user_id": rng.integers(0, n // 20, n),
                             "item_id": rng.integers(0, 5000, n),
                             "timestamp": rng.integers(0, 10**9, n)}), p.d / "big/part-0.parquet")


def both(*setups: Setup) -> Setup:
    def setup(p: Places) -> None:
        for s in setups:
            s(p)
    return setup


TRAIN = ("train", "--output", "{d}/out", "data.source={data}", "model.dim=8", "train.epochs=1")
PREPARE_LOG = ("prepare", "--input", "{d}/log", "--format", "parquet", "--output")
PREPARE = ("prepare", "--input", "{log}", "--format", "parquet", "--output")
SYNTH = ("synth", "--users", "60", "--items", "40", "--interactions", "1200", "--output")
ROBUSTNESS = '{"fgm": {"0.0": {"ndcg@5": 0.3}, "0.5": {"ndcg@5": 0.2}}}'

# --- security: nothing from a run directory or a config is ever executed ----------------------
SECURITY: list[Case] = [
]

# --- outputs: never delete what advrec did not write; no half-written output -----------------
OUTPUTS: list[Case] = [
    Case("prepare-missing-input", ("prepare", "--input", "{d}/nope", "--format", "parquet",
                                   "--output", "{d}/out"), "{d}/nope"),
    # the raw log was deleted: --output is the input, inside it, or holds it
    Case("prepare-output-is-input", (*PREPARE_LOG, "{d}/log"), "{d}/log", copy("log", "log"),
         absent=("{d}/log.tmp-*",), unchanged=("{d}/log",)),
    Case("prepare-output-in-input", (*PREPARE_LOG, "{d}/log/out"), "{d}/log/out",
         copy("log", "log"), absent=("{d}/log/out",), unchanged=("{d}/log",)),
    Case("prepare-output-holds-input", ("prepare", "--input", "{d}/out/log", "--format",
                                        "parquet", "--output", "{d}/out"), "{d}/out",
         copy("log", "out/log"), absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    # whatever is at --output and is not advrec's stays: a directory, a file, the working tree
    Case("prepare-output-foreign-dir", (*PREPARE, "{d}/out"), "{d}/out",
         write("out/notes.txt", "mine"), absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("prepare-output-file", (*PREPARE, "{d}/out"), "{d}/out", write("out", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("prepare-output-parent-file", (*PREPARE, "{d}/f/out"), "{d}/f",
         write("f", "mine"), absent=("{d}/f.tmp-*",), unchanged=("{d}/f",)),
    Case("prepare-output-cwd", (*PREPARE, "."), ".: holds the working directory",
         write("notes.txt", "mine"), absent=("{d}/*.tmp-*",), unchanged=("{d}",)),
    Case("prepare-output-synth-log", (*PREPARE, "{d}/out"), "{d}/out", copy("log", "out"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("synth-output-foreign-dir", (*SYNTH, "{d}/out"), "{d}/out",
         write("out/notes.txt", "mine"), absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("synth-output-dataset", (*SYNTH, "{d}/out"), "{d}/out", copy("data", "out"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("synth-output-file", (*SYNTH, "{d}/out"), "{d}/out", write("out", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("train-output-cwd", ("train", "--output", ".", *TRAIN[3:]),
         "{d}: holds the working directory", write("notes.txt", "mine"), unchanged=("{d}",)),
    Case("train-output-foreign-dir", TRAIN, "{d}/out", write("out/notes.txt", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("train-output-dataset", TRAIN, "{d}/out", copy("data", "out"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("train-output-file", TRAIN, "{d}/out", write("out", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    # a plot into a directory said "wrote" and left DIR/NAME.tmp-* behind
    Case("plot-output-dir", ("plot", "{d}/run", "--output", "{d}/out"), "{d}/out",
         both(copy_run(), write("run/robustness.json", ROBUSTNESS), write("out/keep.txt", "x")),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("plot-output-parent-file", ("plot", "{d}/run", "--output", "{d}/f/out.png"), "{d}/f",
         both(copy_run(), write("run/robustness.json", ROBUSTNESS), write("f", "x")),
         absent=("{d}/f.tmp-*",), unchanged=("{d}/f",)),
    Case("evaluate-plot-is-dir", ("evaluate", "--run", "{d}/run", "--eps", "0", "--quiet"),
         "{d}/run/robustness.png", both(copy_run(), write("run/robustness.png/keep", "x")),
         absent=("{d}/run/robustness.json", "{d}/run/*.tmp-*"),
         unchanged=("{d}/run/robustness.png",)),
]

# --- config: keys, values, YAML -----------------------------------------------------------------
CONFIG: list[Case] = [
    Case("train-unknown-key", (*TRAIN, "adv.nope=1"), "adv.nope"),
    Case("train-config-missing", ("train", "--config", "{d}/missing.yaml", "--output", "{d}/out"),
         "{d}/missing.yaml"),
]

# --- data: columns, types, values ----------------------------------------------------------------
DATA: list[Case] = [
]

# --- storage, resources and signals -------------------------------------------------------------
RUNTIME: list[Case] = [
    # SIGINT and SIGTERM: one line, 130 or 143, temporary outputs gone; a run stopped before its
    # first checkpoint leaves nothing, one after it stays resumable (tests/test_interrupts.py)
    Case("prepare-sigint", ("prepare", "--input", "{d}/big", "--format", "parquet", "--output",
                            "{d}/out"), "interrupted (SIGINT)", big_log, code=130,
         signal=signal.SIGINT, after_file="{d}/out.tmp-*", unchanged=("{d}/big",)),
    Case("synth-sigterm", ("synth", "--users", "20000", "--items", "5000", "--interactions",
                           "1000000", "--output", "{d}/out"), "interrupted (SIGTERM)",
         code=143, signal=signal.SIGTERM, after_file="{d}/out.tmp-*"),
    Case("train-sigint", (*TRAIN[:-1], "train.epochs=50", "train.checkpoint_every=0"),
         "interrupted (SIGINT)", code=130, signal=signal.SIGINT, after="epoch 1/"),
    Case("train-sigterm", (*TRAIN[:-1], "train.epochs=50", "train.checkpoint_every=0"),
         "interrupted (SIGTERM)", code=143, signal=signal.SIGTERM, after="epoch 1/"),
    Case("train-replace-sigint", (*TRAIN[:-1], "train.epochs=50"), "interrupted (SIGINT)",
         copy_run("out"), code=130, signal=signal.SIGINT, after="epoch 1/",
         absent=(), unchanged=("{d}/out",)),
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
    if case.after_file:  # a command that prints nothing before its end
        pattern = places.fill(case.after_file)
        while proc.poll() is None and not glob.glob(pattern):
            time.sleep(0.005)
        proc.send_signal(case.signal)
        stdout, stderr = proc.communicate(timeout=120)
        return proc.returncode, stdout, stderr
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
    for path in case.absent:  # a glob
        assert not glob.glob(places.fill(path)), f"{places.fill(path)} left behind"
    for path, digest in before.items():
        assert _digest(Path(places.fill(path))) == digest, f"{places.fill(path)} changed"
    assert not (tmp_path / "PWNED").exists(), "a payload ran"


def test_enough_cases() -> None:
    """README.md's "Reliability" section states how many hostile inputs the table holds."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{len(CASES)} hostile inputs" in readme
