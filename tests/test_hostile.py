"""The CLI as a hostile user meets it: every bad input, fault and payload, one table.

Each case runs ``advrec`` as a real subprocess and asserts what the README promises of bad input:
the exit code (2; 130 / 143 after SIGINT / SIGTERM), exactly one ``advrec: error:`` line that
names the culprit and no traceback, nothing left at the output, the user's files untouched, and
no marker file from a planted payload (a payload, if ever executed, touches ``{d}/PWNED``).

Placeholders in a case's arguments: ``{d}`` the case's own empty directory, ``{log}`` a raw
synthetic log (Parquet, from ``advrec synth``), ``{data}`` that log prepared, ``{run}`` a finished
MF run on it, ``{silent}`` the URL of an endpoint that accepts connections and never answers.
The shared ones are read-only: a case that alters one copies it first (`copy_run`). The count
of cases is written in README.md under "Reliability".
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from advrec.cli import main
from payloads import Touch, dotted_pickle, system_pickle

Setup = Callable[["Places"], None]


@dataclass(frozen=True)
class Places:
    """Where a case runs: its own directory and the shared read-only inputs."""

    d: Path
    log: Path
    data: Path
    run: Path
    silent: str = ""

    def fill(self, text: str) -> str:
        return text.format(d=self.d, log=self.log, data=self.data, run=self.run,
                           silent=self.silent)


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


def parquet(name: str, columns: dict[str, list]) -> Setup:
    """A setup that writes a Parquet file of ``columns`` to ``{d}/name``."""
    def setup(p: Places) -> None:
        pq.write_table(pa.table(columns), p.d / name)
    return setup


def remove(name: str) -> Setup:
    """A setup that deletes the file ``{d}/name``."""
    def setup(p: Places) -> None:
        (p.d / name).unlink()
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
ALIAS_BOMB = "".join(f"a{i}: &a{i} [{','.join([f'*a{i - 1}' if i else '1'] * 9)}]\n"
                     for i in range(9))
"""Nested YAML aliases: 9 anchors of a few hundred bytes, 9**9 numbers once expanded."""
FLOW_ALIAS_BOMB = "[&a0 [1,1,1,1,1,1,1,1,1]," + ",".join(
    f"&a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)) + "]"
"""The same in one flow sequence, as an override's value."""
PREPARE_LOG = ("prepare", "--input", "{d}/log", "--format", "parquet", "--output")
PREPARE = ("prepare", "--input", "{log}", "--format", "parquet", "--output")
SYNTH = ("synth", "--users", "60", "--items", "40", "--interactions", "1200", "--output")
ROBUSTNESS = '{"fgm": {"0.0": {"ndcg@5": 0.3}, "0.5": {"ndcg@5": 0.2}}}'


def string_ids(p: Places) -> None:
    """A copy of the prepared dataset at ``{d}/ds`` whose train split's ``user`` column holds
    strings, not the integer indices `prepare` writes."""
    shutil.copytree(p.data, p.d / "ds")
    writable("ds")(p)
    path = p.d / "ds/train.parquet"
    table = pq.read_table(path)
    column = table.schema.get_field_index("user")
    table = table.set_column(column, "user", pa.array([f"u{u}" for u in table["user"].to_pylist()]))
    path.unlink()
    pq.write_table(table, path)


def truncate(name: str, size: int) -> Setup:
    """A setup that cuts the file ``{d}/name`` (copied earlier) to its first ``size`` bytes."""
    def setup(p: Places) -> None:
        path = p.d / name
        path.chmod(0o644)
        path.write_bytes(path.read_bytes()[:size])
    return setup


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]


CLOSED = f"http://127.0.0.1:{_closed_port()}"
CSV = ("prepare", "--input", "{d}/log.csv", "--format", "csv", "--output", "{d}/out")
DATASET = ("train", "--output", "{d}/out", "data.source={d}/ds", "model.dim=8", "train.epochs=1")
TUNE = ("tune", "--output", "{d}/out", "data.source={data}", "train.epochs=1")
HEADER = "user_id,item_id,rating,timestamp\n"

def sasrec_run(p: Places) -> None:
    """A finished 1-epoch SASRec run on the shared dataset at ``{d}/s``: histories of at most
    5 items (model.max_len)."""
    assert main(["train", "--output", str(p.d / "s"), "--quiet", f"data.source={p.data}",
                 "model.name=sasrec", "model.dim=8", "model.max_len=5", "train.epochs=1",
                 "eval.ks=[5]"]) == 0


def item_feature_data(p: Places) -> None:
    """The shared log prepared at ``{d}/f`` with one item feature (its first timestamp)."""
    assert main(["prepare", "--input", str(p.log), "--format", "parquet", "--output",
                 str(p.d / "f"), "--item-features", "timestamp"]) == 0


# --- security: nothing from a run directory or a config is ever executed ----------------------
def writable(name: str = "run") -> Setup:
    """A setup that makes the copied ``{d}/name`` writable again (copies keep the modes)."""
    def setup(p: Places) -> None:
        for path in [p.d / name, *(p.d / name).rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    return setup


def plant(name: str, payload: Callable[[str], bytes]) -> Setup:
    """A setup that writes ``payload({d}/PWNED)`` to ``{d}/name``, replacing any file there."""
    def setup(p: Places) -> None:
        (p.d / name).unlink(missing_ok=True)
        write(name, payload(str(p.d / "PWNED")))(p)
    return setup


def torch_payload(marker: str) -> bytes:
    """A checkpoint in torch's own format whose pickle runs ``touch marker``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"model": Touch(marker)}, buffer)
    return buffer.getvalue()


def sharded_model(p: Places) -> None:
    """The copied run's model.pt as a sharded run's: no ``model`` key (its tables are in the
    ``checkpoint/model`` directory, where a case plants its metadata)."""
    import torch

    path = p.d / "run/checkpoint/model.pt"
    state = torch.load(path, weights_only=True)
    del state["model"]
    torch.save(state, path)


def unfinished(p: Places) -> None:
    """The copied run as if stopped after its checkpoint (resumable)."""
    (p.d / "run/metrics.json").unlink()


def pickled_ids(path: Path, marker: str) -> None:
    """Rewrite the Parquet file ``path`` with its ``user`` column as Ray Data's pickled Python
    objects (``ray.data.arrow_pickled_object``), each a payload touching ``marker``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data.extensions import ArrowPythonObjectType

    table = pq.read_table(path)
    blobs = pa.array([system_pickle(marker)] * table.num_rows, pa.large_binary())
    column = table.schema.get_field_index("user")
    table = table.set_column(column, "user", ArrowPythonObjectType().wrap_array(blobs))
    path.unlink()
    pq.write_table(table, path)


SECURITY: list[Case] = [
    # a pickle passing a module-prefix check by a dotted name (torch...filesystem + os.system)
    Case("evaluate-sharded-metadata-dotted-name", ("evaluate", "--run", "{d}/run"),
         "{d}/run/checkpoint/model/.metadata: refused to unpickle",
         both(copy_run(), writable(), sharded_model,
              plant("run/checkpoint/model/.metadata", dotted_pickle)),
         unchanged=("{d}/run",)),
    Case("evaluate-sharded-metadata-reduce", ("evaluate", "--run", "{d}/run"),
         "{d}/run/checkpoint/model/.metadata: refused to unpickle",
         both(copy_run(), writable(), sharded_model,
              plant("run/checkpoint/model/.metadata", system_pickle)),
         unchanged=("{d}/run",)),
    Case("evaluate-model-pickle", ("evaluate", "--run", "{d}/run"),
         "{d}/run/checkpoint/model.pt: refused to unpickle",
         both(copy_run(), writable(), plant("run/checkpoint/model.pt", torch_payload)),
         unchanged=("{d}/run",)),
    Case("train-resume-state-pickle", ("train", "--resume", "{d}/run"),
         "{d}/run/checkpoints/epoch-000000.pt: refused to unpickle",
         both(copy_run(), writable(), unfinished,
              plant("run/checkpoints/epoch-000000.pt", torch_payload)),
         unchanged=("{d}/run",)),
    Case("train-resume-state-bare-pickle", ("train", "--resume", "{d}/run"),
         "{d}/run/checkpoints/epoch-000000.pt: refused to unpickle",
         both(copy_run(), writable(), unfinished,
              plant("run/checkpoints/epoch-000000.pt", system_pickle)),
         unchanged=("{d}/run",)),
    # Ray Tune unpickles an experiment's state: only what this user's advrec signed is resumed
    Case("tune-resume-planted-tuner-pickle", ("tune", "--resume", "{d}/exp"),
         "{d}/exp/tuner.pkl: refused: not signed",
         both(write("exp/search.json", "{}"), plant("exp/tuner.pkl", system_pickle)),
         unchanged=("{d}/exp",), env={"XDG_CONFIG_HOME": "{d}/config"}),
    Case("tune-resume-planted-searcher-state", ("tune", "--resume", "{d}/exp"),
         "{d}/exp/searcher-state-2026-01-01_00-00-00.pkl: refused: not signed",
         both(write("exp/search.json", "{}"),
              plant("exp/searcher-state-2026-01-01_00-00-00.pkl", dotted_pickle)),
         unchanged=("{d}/exp",), env={"XDG_CONFIG_HOME": "{d}/config"}),
    # Ray Data unpickles a column of its pickled-object type once a value is read as Python
    Case("train-dataset-pickled-column", ("train", "--output", "{d}/out", "data.source={d}/evil",
                                          "model.dim=8", "train.epochs=1"),
         "{d}/evil/train.parquet: column 'user' has the extension type",
         both(lambda p: shutil.copytree(p.data, p.d / "evil"), writable("evil"),
              lambda p: pickled_ids(p.d / "evil/train.parquet", str(p.d / "PWNED"))),
         unchanged=("{d}/evil",)),
    Case("config-yaml-python-tag", ("train", "--config", "{d}/evil.yaml", "--output", "{d}/out"),
         "{d}/evil.yaml: not valid YAML",
         write("evil.yaml", "model: !!python/object/apply:os.system ['touch PWNED']\n")),
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
    Case("train-config-alias-bomb", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml at line 3, column 10: alias *a0: aliases are refused",
         setup=write("c.yaml", f"data: {{source: x}}\n{ALIAS_BOMB}adv: {{eps: *a8}}\n")),
    Case("train-override-alias-bomb", (*TRAIN, f"adv.eps={FLOW_ALIAS_BOMB}"),
         "at line 1, column 31: alias *a0: aliases are refused"),
    Case("tune-space-alias-bomb", ("tune", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml at line 3, column 10: alias *a0",
         setup=write("c.yaml", f"data: {{source: x}}\n{ALIAS_BOMB}"
                               "tune: {space: {adv.eps: {choice: *a8}}}\n")),
    Case("run-spec-alias", ("run", "{d}/spec.yaml"), "{d}/spec.yaml at line 4, column 22: alias *e",
         setup=both(write("c.yaml", "data: {source: x}\n"),
                    write("spec.yaml", "command: train\nconfig: c.yaml\nstorage: out\n"
                                       "overrides: {adv.eps: *e, adv.lambda: &e 1}\n"))),
    Case("train-eps-inf", (*TRAIN, "adv.eps=.inf"), "adv.eps: Input should be a finite number"),
    # YAML's true where a number goes: pydantic would train at eps 1.0, or budget 1
    Case("train-eps-boolean", (*TRAIN, "adv.eps=true"),
         "adv.eps: a boolean where a number or a name goes"),
    Case("train-mix-eps-boolean", (*TRAIN, "adv.mix=[{{method: fgm, eps: yes}}]"),
         "adv.mix[0].eps: a boolean where a number or a name goes"),
    Case("train-lr-inf", (*TRAIN, "train.lr=.inf"), "train.lr: Input should be a finite number"),
    Case("train-lr-nan", (*TRAIN, "train.lr=nan"), "train.lr: Input should be a finite number"),
    Case("train-eval-eps-nan", (*TRAIN, "eval.eps=[0, .nan]"), "eval.eps[1]: Input should be a "
         "finite number"),
    Case("run-spec-override-inf", ("run", "{d}/spec.yaml"), "adv.eps: Input should be a finite "
         "number", setup=both(write("c.yaml", "data: {source: x}\n"),
                              write("spec.yaml", "command: train\nconfig: c.yaml\n"
                                    "storage: out\noverrides: {adv.eps: .inf}\n"))),
    Case("train-config-duplicate-section", ("train", "--config", "{d}/c.yaml", "--output",
                                            "{d}/out"),
         "{d}/c.yaml at line 3, column 1: key 'adv' is repeated",
         setup=write("c.yaml", "data: {source: x}\nadv: {method: fgm}\nadv: {eps: 0.1}\n")),
    Case("run-spec-duplicate-key", ("run", "{d}/spec.yaml"),
         "{d}/spec.yaml at line 3, column 1: key 'command' is repeated",
         setup=both(write("c.yaml", "data: {source: x}\n"),
                    write("spec.yaml", "command: train\nconfig: c.yaml\ncommand: tune\n"
                                       "storage: out\n"))),
    Case("train-config-is-a-directory", ("train", "--config", "{d}", "--output", "{d}/out"),
         "{d}: is a directory, not a config file"),
    Case("train-config-binary", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml: not YAML text (not utf-8: byte 0x80",
         setup=write("c.yaml", bytes(range(256)) * 4)),
    Case("train-config-empty", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "data: required config key is missing", setup=write("c.yaml", "")),
    Case("train-config-a-list", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml: a config file must be a YAML mapping, not a list",
         setup=write("c.yaml", "- data\n- adv\n")),
    Case("train-config-10mb-value", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml: more than 64 KiB of YAML",
         setup=write("c.yaml", "data: {source: " + "x" * (10 << 20) + "}\n")),
    Case("train-config-deep", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml at line 2, column 37: nested deeper than 32 levels",
         setup=write("c.yaml", "data: {source: x}\nadv: " + "[" * 5000 + "]" * 5000 + "\n")),
    Case("train-config-python-tag", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "{d}/c.yaml: not valid YAML at line 1, column 7: could not determine a constructor",
         setup=write("c.yaml", "data: !!python/object/apply:os.system [touch PWNED]\n")),
    Case("train-config-unicode-key", ("train", "--config", "{d}/c.yaml", "--output", "{d}/out"),
         "adv.épsilon: unknown config key",
         setup=write("c.yaml", "data: {source: x}\nadv: {épsilon: 1}\n")),
    Case("train-section-is-a-scalar", (*TRAIN, "adv=3"),
         "adv: Input should be a valid dictionary"),
    Case("train-override-under-a-scalar", (*TRAIN, "adv=3", "adv.eps=1"),
         "override 'adv.eps=1': adv is not a section"),
    Case("train-override-trailing-dot", (*TRAIN, "adv.=1"),
         "override 'adv.=1': a key is names joined by dots"),
    Case("train-override-bad-yaml", (*TRAIN, "adv.eps=[0.1"),
         "override 'adv.eps=[0.1': not valid YAML"),
    Case("train-override-control-character", (*TRAIN, "adv.eps=\x07"),
         "override 'adv.eps=\\x07': not YAML text (character U+0007"),
    Case("train-override-bad-date", (*TRAIN, "data.seed=2001-02-30"),
         "override 'data.seed=2001-02-30': not valid YAML at line 1, column 1: day is out of "
         "range"),
    Case("train-override-long-value", (*TRAIN, "adv.method=" + "x" * 60_000),
         "adv.method: Input should be 'none', 'random', 'fgsm', 'fgm', 'pgd', 'jsma', "
         "'jsma-items' or 'jsma-fields' (got 'xxx"),
    Case("train-override-newline-key", (*TRAIN, "adv.a\nb=1"), "adv.'a\\nb': unknown config key"),
    Case("run-spec-data-scalar", ("run", "{d}/spec.yaml"), "data: Input should be a valid "
         "dictionary", setup=both(write("c.yaml", "data: 3\n"),
                                  write("spec.yaml", "command: train\nconfig: c.yaml\n"
                                                     "storage: out\n"))),
    Case("tune-grace-period-over-epochs", ("tune", "--output", "{d}/out", "data.source={data}",
                                           "train.epochs=2", "tune.grace_period=5"),
         "tune.grace_period=5 is more than train.epochs=2"),
    Case("tune-space-choice-a-date", ("tune", "--output", "{d}/out", "data.source={data}",
                                      "tune.space={{data.seed: {{choice: [2001-01-01]}}}}"),
         "tune.space: data.seed=datetime.date(2001, 1, 1): data.seed: Input should be a valid "
         "integer"),
    Case("evaluate-eps-nan", ("evaluate", "--run", "{run}", "--eps", "nan,inf"),
         "--eps: expected finite numbers >= 0, got 'nan,inf'", unchanged=("{run}",)),
    Case("evaluate-eps-huge", ("evaluate", "--run", "{run}", "--eps", "0,1e400"),
         "--eps: expected finite numbers >= 0, got '0,1e400'", unchanged=("{run}",)),
    # advrec recommend
    Case("recommend-no-checkpoint", ("recommend", "--run", "{d}/run", "--output", "{d}/out"),
         "{d}/run: no checkpoint/model.pt (a run that has not finished)",
         both(copy_run(), remove("run/checkpoint/model.pt"))),
    Case("recommend-k-zero", ("recommend", "--run", "{run}", "--k", "0", "--output",
                              "{d}/out"), "--k"),
    Case("recommend-k-above-catalogue", ("recommend", "--run", "{run}", "--k", "100000",
                                         "--output", "{d}/out"),
         "--k 100000: must be between 1 and the catalogue's"),
    Case("recommend-users-missing", ("recommend", "--run", "{run}", "--users", "{d}/none.txt",
                                     "--output", "{d}/out"),
         "--users {d}/none.txt: no such file"),
    Case("recommend-users-binary", ("recommend", "--run", "{run}", "--users", "{d}/u.bin",
                                    "--output", "{d}/out"),
         "--users {d}/u.bin: neither Parquet nor UTF-8 text", write("u.bin", b"\xff\xfe\x00")),
    Case("recommend-users-empty", ("recommend", "--run", "{run}", "--users", "{d}/u.txt",
                                   "--output", "{d}/out"),
         "--users {d}/u.txt: no user ids in it", write("u.txt", "\n\n")),
    Case("recommend-users-parquet-no-column", ("recommend", "--run", "{run}", "--users",
                                               "{log}/part-00000.parquet", "--output",
                                               "{d}/out"),
         "--users {log}/part-00000.parquet: no user column (it has user_id, item_id"),
    Case("recommend-unknown-user-error", ("recommend", "--run", "{run}", "--users", "{d}/u.txt",
                                          "--unknown", "error", "--output", "{d}/out"),
         "--users {d}/u.txt: user 'ghost' is not a user of the run", write("u.txt", "ghost\n")),
    Case("recommend-pairs-no-item-column", ("recommend", "--run", "{run}", "--pairs", "{d}/p.csv",
                                            "--output", "{d}/out"),
         "--pairs {d}/p.csv: no item column (it has user, thing)",
         write("p.csv", "user,thing\n1,2\n")),
    Case("recommend-pairs-unknown-item", ("recommend", "--run", "{run}", "--pairs", "{d}/p.csv",
                                          "--output", "{d}/out"),
         "--pairs {d}/p.csv: item 'nothing' is not an item of the run",
         write("p.csv", "user,item\n0,nothing\n")),
    Case("recommend-pairs-with-k", ("recommend", "--run", "{run}", "--pairs", "{d}/p.csv", "--k",
                                    "3", "--output", "{d}/out"),
         "--k: --pairs scores the pairs given", write("p.csv", "user,item\n0,1\n")),
    Case("recommend-output-foreign-file", ("recommend", "--run", "{run}", "--output", "{d}/out"),
         "{d}/out: exists and is not a file advrec recommend wrote", write("out", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("recommend-output-inside-run", ("recommend", "--run", "{d}/run", "--output",
                                         "{d}/run/config.yaml"),
         "{d}/run/config.yaml: overlaps the input {d}/run", copy_run(),
         unchanged=("{d}/run",)),
    Case("recommend-output-is-users-file", ("recommend", "--run", "{run}", "--users", "{d}/u.txt",
                                            "--output", "{d}/u.txt"),
         "{d}/u.txt: overlaps the input {d}/u.txt", write("u.txt", "1\n"),
         unchanged=("{d}/u.txt",)),
    Case("recommend-output-http", ("recommend", "--run", "{run}", "--output",
                                   "http://127.0.0.1:9/x.parquet"),
         "http://127.0.0.1:9/x.parquet: http URLs are read-only"),
    Case("recommend-users-is-dir", ("recommend", "--run", "{run}", "--users", "{log}", "--output",
                                    "{d}/out"), "--users {log}: is a directory; name a file"),
    Case("recommend-users-bool-column", ("recommend", "--run", "{run}", "--users", "{d}/u.parquet",
                                         "--output", "{d}/out"),
         "--users {d}/u.parquet: column user is bool; raw ids are text or whole numbers",
         parquet("u.parquet", {"user": [True, False]})),
    Case("recommend-run-json-dataset-number", ("recommend", "--run", "{d}/run", "--output",
                                               "{d}/out"),
         "{d}/run/run.json: names no dataset",
         both(copy_run(), write("run/run.json", '{"advrec": "0.1.0", "dataset": 5}'))),
    Case("recommend-output-is-dir", ("recommend", "--run", "{run}", "--output", "{d}/out"),
         "{d}/out: is a directory; name a file", write("out/keep.txt", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    # advrec export
    Case("export-output-foreign-dir", ("export", "--run", "{run}", "--output", "{d}/out"),
         "{d}/out: exists and is not an advrec export", write("out/notes.txt", "mine"),
         absent=("{d}/out.tmp-*",), unchanged=("{d}/out",)),
    Case("export-no-checkpoint", ("export", "--run", "{d}/run", "--output", "{d}/out"),
         "{d}/run: no checkpoint/model.pt", both(copy_run(), remove("run/checkpoint/model.pt"))),
    Case("export-output-inside-run", ("export", "--run", "{d}/run", "--output", "{d}/run/e"),
         "{d}/run/e: overlaps the input {d}/run", copy_run(), absent=("{d}/run/e*",)),
    Case("export-bad-format", ("export", "--run", "{run}", "--format", "onnx", "--output",
                               "{d}/out"), "onnx"),
    # beyond-accuracy metrics: of top-K lists of the whole catalogue, from a ranking model
    Case("train-beyond-sampled", (*TRAIN, "eval.beyond=true", "eval.protocol=sampled"),
         "eval: beyond=true: the beyond-accuracy metrics are of top-K lists of the whole "
         "catalogue; set protocol=full (not sampled)"),
    Case("train-beyond-ctr-model", (*TRAIN, "eval.beyond=true", "model.name=deepfm"),
         "eval.beyond: model.name=deepfm is evaluated by auc, logloss, gauc, not by top-K lists"),
    Case("train-tail-ratio-zero", (*TRAIN, "eval.tail_ratio=0"), "eval.tail_ratio"),
    Case("train-unknown-logger", (*TRAIN, "train.loggers=[wandb]"), "train.loggers"),
    # argparse's own errors: one line too, not the usage block
    Case("cli-unknown-flag", ("train", "--nope"), "--nope"),
    Case("cli-not-an-integer", ("synth", "--users", "many", "--items", "5", "--interactions", "9",
                                "--output", "{d}/out"), "--users"),
    Case("cli-bad-choice", ("prepare", "--input", "{log}", "--format", "xlsx", "--output",
                            "{d}/out"), "xlsx"),
    Case("cli-no-command", (), "COMMAND"),
    # every kind of bad --split
    Case("prepare-split-unknown-kind", (*PREPARE, "{d}/out", "--split", "bogus"),
         "bad split 'bogus': unknown kind 'bogus'"),
    Case("prepare-split-not-numbers", (*PREPARE, "{d}/out", "--split", "random:a,b"),
         "bad split 'random:a,b': shares must be numbers"),
    Case("prepare-split-four-shares", (*PREPARE, "{d}/out", "--split", "random:1,2,3,4"),
         "bad split 'random:1,2,3,4': give 1 to 3 shares"),
    Case("prepare-split-negative-share", (*PREPARE, "{d}/out", "--split", "random:-1,1"),
         "bad split 'random:-1,1': shares must be finite and non-negative"),
    Case("prepare-split-nan-share", (*PREPARE, "{d}/out", "--split", "random:nan"),
         "bad split 'random:nan': shares must be finite and non-negative"),
    Case("prepare-split-no-train", (*PREPARE, "{d}/out", "--split", "random:0,0.5,0.5"),
         "bad split 'random:0,0.5,0.5': the train and test shares must be positive"),
    Case("prepare-split-loo-argument", (*PREPARE, "{d}/out", "--split", "loo:3"),
         "bad split 'loo:3': 'loo' takes no arguments"),
    Case("prepare-split-time-over-one", (*PREPARE, "{d}/out", "--split", "time:1.5"),
         "bad split 'time:1.5': a single train share must be between 0 and 1"),
    # a prepared dataset ignores data.split, but a bad one is still refused (was: exit 0)
    Case("train-split-bogus-on-prepared", (*TRAIN, "data.split=bogus"),
         "data.split: bad split: unknown kind 'bogus'"),
    # two shares are (train, test): no validation, which training needs (was: a KeyError
    # traceback after the first epoch)
    Case("train-split-no-validation", (*TRAIN, "data.split=random:0.8,0.2"),
         "data.split: no validation share"),
    Case("prepare-negative-user-buckets", (*PREPARE, "{d}/out", "--user-buckets", "-5"),
         "--user-buckets/data.user_buckets must be >= 0"),
    Case("prepare-label-threshold-inf", (*PREPARE, "{d}/out", "--label-threshold", "inf"),
         "--label-threshold/data.label_threshold must be a finite number, not inf"),
    # a threshold above every rating: only non-clicks, refused now (AUC failed after training)
    Case("prepare-label-threshold-one-class", (*PREPARE, "{d}/out", "--label-threshold", "99"),
         "every kept interaction is a non-click (0) by --label-threshold/data.label_threshold 99"),
    Case("synth-zero-users", ("synth", "--users", "0", "--items", "5", "--interactions", "9",
                              "--output", "{d}/out"), "--users: expected a positive integer"),
    Case("synth-negative-items", ("synth", "--users", "5", "--items", "-3", "--interactions",
                                  "9", "--output", "{d}/out"),
         "--items: expected a positive integer"),
    Case("synth-zero-interactions", (*SYNTH[:5], "--interactions", "0", "--output", "{d}/out"),
         "--interactions: expected a positive integer"),
    Case("synth-drift-without-days", (*SYNTH, "{d}/out", "--drift", "0.5"),
         "--drift: preferences drift from day to day; give --days too"),
    Case("synth-zero-days", (*SYNTH, "{d}/out", "--days", "0"),
         "--days: expected a positive integer"),
    Case("synth-days-above-interactions", (*SYNTH, "{d}/out", "--days", "1201"),
         "synth: days must be in 1..interactions (1200), not 1201"),
    Case("synth-drift-inf", (*SYNTH, "{d}/out", "--days", "3", "--drift", "inf"),
         "--drift: expected a number in [0, 1], got 'inf'"),
    Case("train-no-config", ("train", "--output", "{d}/out"),
         "data: required config key is missing"),
    Case("train-no-output", ("train", "data.source={data}"), "--output is required"),
    Case("train-model-name-unknown", (*TRAIN, "model.name=nope"),
         "model.name: Input should be 'mf'"),
    Case("train-epochs-zero", (*TRAIN, "train.epochs=0"),
         "train.epochs: Input should be greater than 0"),
    Case("train-eval-ks-empty", (*TRAIN, "eval.ks=[]"),
         "eval.ks: must be a non-empty list of positive cut-offs"),
    Case("train-monitor-not-reported", (*TRAIN, "train.monitor=nope@5"),
         "train.monitor: 'nope@5' is not one of the metrics reported"),
    Case("train-heads-not-dividing-dim", (*TRAIN, "model.name=sasrec", "model.heads=3"),
         "3 heads do not divide model.dim=8"),
    Case("train-batch-size-zero", (*TRAIN, "train.batch_size=0"),
         "train.batch_size: Input should be greater than 0"),
    Case("train-resume-with-config", ("train", "--resume", "{run}", "--config", "{d}/c.yaml"),
         "--resume continues a run as it was configured", unchanged=("{run}",)),
    Case("train-resume-not-a-run", ("train", "--resume", "{d}/mine"),
         "{d}/mine: not a run directory (no run.json)", write("mine/notes.txt", "mine"),
         unchanged=("{d}/mine",)),
    Case("train-resume-finished", ("train", "--resume", "{run}"),
         "{run}: this run has finished", unchanged=("{run}",)),
    Case("evaluate-attack-unknown", ("evaluate", "--run", "{run}", "--attack", "nope"),
         "--attack: unknown attack 'nope'", unchanged=("{run}",)),
    Case("evaluate-attack-empty", ("evaluate", "--run", "{run}", "--attack", ","),
         "--attack: name fgm, pgd, jsma, jsma-items or jsma-fields", unchanged=("{run}",)),
    Case("evaluate-steps-zero", ("evaluate", "--run", "{run}", "--steps", "0"),
         "--steps: expected a positive integer", unchanged=("{run}",)),
    Case("evaluate-workers-negative", ("evaluate", "--run", "{run}", "--workers", "-1"),
         "--workers: expected a non-negative integer", unchanged=("{run}",)),
    Case("evaluate-eps-negative", ("evaluate", "--run", "{run}", "--eps=-1"),
         "--eps: expected finite numbers >= 0, got '-1'", unchanged=("{run}",)),
    Case("evaluate-eps-not-numbers", ("evaluate", "--run", "{run}", "--eps", "a,b"),
         "--eps: expected comma-separated numbers, got 'a,b'", unchanged=("{run}",)),
    Case("tune-space-unknown-key", (*TUNE, "tune.space={{nope.key: {{choice: [1, 2]}}}}"),
         "tune.space: nope.key=1: nope: unknown config key"),
    Case("tune-metric-not-reported", (*TUNE, "tune.space={{adv.eps: {{choice: [1, 2]}}}}",
                                      "tune.metric=nope"),
         "tune.metric: 'nope' is never reported"),
    Case("tune-space-unknown-distribution", (*TUNE, "tune.space={{adv.eps: {{bogus: [1]}}}}"),
         "tune.space.adv.eps.bogus: unknown config key"),
    Case("tune-space-empty-choice", (*TUNE, "tune.space={{adv.eps: {{choice: []}}}}"),
         "tune.space.adv.eps: choice needs at least one value"),
    Case("tune-space-uniform-reversed", (*TUNE, "tune.space={{adv.eps: {{uniform: [2, 1]}}}}"),
         "tune.space.adv.eps: uniform takes [low, high] with low < high"),
    Case("tune-resume-not-an-experiment", ("tune", "--resume", "{d}/mine"),
         "{d}/mine: not an advrec tune experiment (no search.json)",
         write("mine/notes.txt", "mine"), unchanged=("{d}/mine",)),
    Case("run-spec-missing", ("run", "{d}/nope.yaml"), "{d}/nope.yaml: job spec not found"),
    Case("submit-spec-missing", ("submit", "{d}/nope.yaml", "--address", CLOSED),
         "{d}/nope.yaml: job spec not found"),
    Case("run-spec-unknown-key", ("run", "{d}/spec.yaml"), "{d}/spec.yaml: bogus: unknown config key",
         setup=both(write("c.yaml", "data: {source: x}\n"),
                    write("spec.yaml", "command: train\nconfig: c.yaml\nstorage: out\n"
                                       "bogus: 1\n"))),
    Case("run-spec-config-missing", ("run", "{d}/spec.yaml"),
         "{d}/spec.yaml: config: nope.yaml: config file not found",
         setup=write("spec.yaml", "command: train\nconfig: nope.yaml\nstorage: out\n")),
    Case("submit-spec-unknown-command", ("submit", "{d}/spec.yaml", "--address", CLOSED),
         "{d}/spec.yaml: command: Input should be 'train', 'tune' or 'stream'",
         setup=both(write("c.yaml", "data: {source: x}\n"),
                    write("spec.yaml", "command: dance\nconfig: c.yaml\nstorage: out\n"))),
    Case("jobs-status-no-id", ("jobs", "status", "--address", CLOSED),
         "jobs status: name a job id"),
    Case("train-target-k-zero", ("train", "--output", "{d}/out", "data.source={data}",
                                 "eval.target_k=0"), "eval.target_k"),
    Case("train-targets-and-resume", ("train", "--resume", "{d}/run", "--targets",
                                      "{d}/t.json"), "--targets: a resumed run measures",
         copy_run(), absent=(), unchanged=("{d}/run",)),
    Case("train-init-from-and-resume", ("train", "--resume", "{d}/run", "--init-from",
                                        "{run}"), "--init-from: a resumed run continues",
         copy_run(), absent=(), unchanged=("{d}/run",)),
    Case("train-init-from-other-model", (*TRAIN, "model.name=neumf", "--init-from", "{run}"),
         "train.init_from={run}: a mf run; this config trains model.name=neumf"),
    Case("train-init-from-other-dim", (*TRAIN, "model.dim=16", "--init-from", "{run}"),
         "train.init_from={run}: its model.dim is 8, this config's 16; a warm start keeps"),
    Case("train-init-from-not-a-run", (*TRAIN, "--init-from", "{data}"),
         "{data}: not a run directory (no run.json)"),
    Case("train-init-from-run-json-dir", (*TRAIN, "--init-from", "{d}/run"),
         "{d}/run/run.json: is a directory, not a file",
         both(copy_run(), writable(), remove("run/run.json"), write("run/run.json/x", "")),
         unchanged=("{d}/run",)),
    Case("train-init-from-bad-config", (*TRAIN, "--init-from", "{d}/run"),
         "{d}/run/config.yaml: data: required config key is missing",
         both(copy_run(), writable(), remove("run/config.yaml"), write("run/config.yaml",
                                                                       "model: {name: mf}\n")),
         unchanged=("{d}/run",)),
    Case("train-init-from-line-break", (*TRAIN, "--init-from", "{d}/run\nx"),
         "{d}/run\\nx: not a run directory"),
    Case("train-init-from-empty", (*TRAIN, "--init-from", ""),
         "train.init_from: String should have at least 1 character"),
    Case("train-init-from-its-output", ("train", "--output", "{d}/run", "data.source={data}",
                                        "model.dim=8", "train.epochs=1", "--init-from",
                                        "{d}/run"),
         "train.init_from={d}/run: the --output run, which this run would replace",
         copy_run(), absent=(), unchanged=("{d}/run",)),
    Case("tune-init-from-not-a-run", (*TUNE, "tune.space={{adv.eps: {{choice: [1, 2]}}}}",
                                      "tune.scheduler=none", "train.init_from={data}"),
         "{data}: not a run directory (no run.json)"),
    Case("train-init-optimizer-without-run", (*TRAIN, "train.init_optimizer=true"),
         "init_optimizer carries over the optimizer state of train.init_from's run; name"),
    Case("train-init-optimizer-torchrec", (*TRAIN, "model.embeddings=torchrec",
                                           "train.optimizer=adagrad", "train.init_optimizer=true",
                                           "--init-from", "{run}"),
         "train.init_optimizer (from {run}): this run's tables are torchrec's"),
    Case("train-output-name-too-long",
         ("train", "--output", "{d}/" + "x" * 300, *TRAIN[3:]),
         "{d}/" + "x" * 300 + ": cannot be written (File name too long)"),
    Case("train-negative-seed", (*TRAIN, "train.seed=-1"),
         "train.seed: Input should be greater than or equal to 0"),
    Case("train-seed-past-64-bits", (*TRAIN, "train.seed=18446744073709551616"),
         "train.seed: Input should be less than 18446744073709551616"),
    Case("train-adaptive-unknown", (*TRAIN, "adv.method=fgm", "adv.adaptive=bogus"),
         "adv.adaptive: Input should be 'none', 'vat' or 'pamacf' (got 'bogus')"),
    Case("train-adaptive-without-attack", (*TRAIN, "adv.adaptive=vat"),
         "adv: adaptive=vat scales an embedding attack's eps per user, but method=none makes "
         "no attack"),
    Case("train-adaptive-discrete-attack", (*TRAIN, "model.name=deepfm", "adv.adaptive=pamacf",
                                            "adv.mix=[{{method: jsma-fields}}]"),
         "adv: adaptive=pamacf scales an embedding attack's eps per user, but "
         "adv.mix[0].method=jsma-fields changes a budget of inputs; set adv.method"),
    Case("train-adaptive-attack-of-no-weight", (*TRAIN, "adv.adaptive=vat", "adv.method=fgm",
                                                "adv.lambda=0", "adv.mix=[{{method: pgd, eps: 0}}]"),
         "adv: adaptive=vat scales an embedding attack's eps per user, but adv.lambda=0, "
         "adv.mix[0].eps=0; set adv.method"),
    Case("train-adaptive-sasrec", (*TRAIN, "model.name=sasrec", "adv.method=fgm",
                                   "adv.adaptive=pamacf"),
         "adv.adaptive=pamacf sizes eps per user, and model.name=sasrec has no user rows"),
    Case("train-adaptive-lambda-zero", (*TRAIN, "adv.method=fgm", "adv.adaptive=vat",
                                        "adv.adaptive_lambda=0"),
         "adv.adaptive_lambda: Input should be greater than 0"),
    # SASRec as published (issue 18): Adam's betas and the paper's split
    Case("train-betas-out-of-range", (*TRAIN, "train.betas=[0.9,1.5]"),
         "train.betas: each beta must be in [0, 1)"),
    Case("train-betas-with-sgd", (*TRAIN, "train.optimizer=sgd", "train.betas=[0.9,0.98]"),
         "betas: only adam and adamw use them (optimizer=sgd)"),
    # adv.schedule (issue 20): free replays and fast's guard
    Case("train-schedule-unknown", (*TRAIN, "adv.method=fgm", "adv.schedule=slow"),
         "adv.schedule: Input should be 'standard', 'free', 'fast' or 'accumulate'"),
    Case("train-replays-zero", (*TRAIN, "adv.method=fgm", "adv.schedule=free", "adv.replays=0"),
         "adv.replays: Input should be greater than 0"),
    Case("train-replays-without-free", (*TRAIN, "adv.method=fgm", "adv.replays=2"),
         "replays=2 applies to schedule=free only"),
    Case("train-free-random", (*TRAIN, "adv.method=random", "adv.schedule=free"),
         "schedule=free moves delta by ascent steps; method=random has no such step"),
    Case("train-accumulate-random", (*TRAIN, "adv.method=random", "adv.schedule=accumulate"),
         "schedule=accumulate moves delta by ascent steps; method=random has no such step"),
    Case("train-accumulate-random-start", (*TRAIN, "adv.method=pgd", "adv.schedule=accumulate",
                                           "adv.random_start=true"),
         "random_start=true: schedule=accumulate starts every row's delta at zero"),
    Case("train-decay-above-one", (*TRAIN, "adv.method=fgm", "adv.schedule=accumulate",
                                   "adv.decay=1.5"),
         "adv.decay: Input should be less than or equal to 1 (got 1.5)"),
    Case("train-decay-standard", (*TRAIN, "adv.method=fgm", "adv.decay=0.5"),
         "decay=0.5 applies to schedule=accumulate only"),
    Case("train-sharded-memory-standard", (*TRAIN, "adv.method=fgm", "adv.memory=sharded"),
         "memory=sharded applies to schedule=accumulate only"),
    Case("train-memory-unknown", (*TRAIN, "adv.method=fgm", "adv.schedule=accumulate",
                                  "adv.memory=rows"),
         "adv.memory: Input should be 'worker' or 'sharded'"),
    Case("train-sharded-memory-dense", (*TRAIN, "adv.method=fgm", "adv.schedule=accumulate",
                                        "adv.memory=sharded"),
         "adv.memory=sharded shards delta as torchrec shards the tables: it applies to "
         "model.embeddings=torchrec only"),
    Case("train-fast-unguarded", (*TRAIN, "adv.method=fgm", "adv.schedule=fast"),
         "set eval.robust_every=1 (eval.robust_rows bounds its cost) or adv.guard=0"),
    Case("prepare-split-loo-keep-short-misspelt", (*PREPARE, "{d}/out", "--split", "loo:keep_short"),
         "bad split 'loo:keep_short': 'loo' takes no arguments but 'keep-short'"),
    # JSMA in embedding space (issue 19): an L0 budget of 1 to model.dim coordinates per row
    Case("train-jsma-l0-zero", (*TRAIN, "adv.method=jsma", "adv.l0=0"),
         "adv.l0: Input should be greater than 0"),
    Case("train-jsma-l0-above-dim", (*TRAIN, "adv.method=jsma", "adv.l0=9"),
         "adv.l0=9 is above model.dim=8: JSMA changes at most l0 coordinates"),
    Case("train-eval-l0-above-dim", (*TRAIN, "eval.l0=100"), "eval.l0=100 is above model.dim=8"),
    Case("evaluate-l0-zero", ("evaluate", "--run", "{run}", "--attack", "jsma", "--l0", "0"),
         "--l0: expected a positive integer", unchanged=("{run}",)),
    Case("evaluate-l0-above-dim", ("evaluate", "--run", "{run}", "--attack", "jsma", "--l0", "9"),
         "--l0 9: above the run's model.dim=8", unchanged=("{run}",)),
    # JSMA on SASRec's histories (issue 19): a model with histories, a budget they can pay
    Case("evaluate-jsma-items-on-mf", ("evaluate", "--run", "{run}", "--attack", "jsma-items"),
         "--attack jsma-items attacks item histories; model.name=mf has none (its inputs are ids "
         "alone: its discrete attack is poisoning, `advrec poison`)", unchanged=("{run}",)),
    Case("evaluate-jsma-items-budget-above-history",
         ("evaluate", "--run", "{d}/s", "--attack", "jsma-items", "--budget", "0,6"),
         "--budget 6: above the longest history of the run's test users, 5 items",
         sasrec_run, unchanged=("{d}/s",)),
    Case("evaluate-budget-without-jsma-items", ("evaluate", "--run", "{run}", "--attack", "fgm",
                                                "--budget", "1"),
         "--budget: only jsma-items and jsma-fields (which change discrete inputs) take it",
         unchanged=("{run}",)),
    Case("evaluate-budget-negative", ("evaluate", "--run", "{run}", "--attack", "jsma-items",
                                      "--budget=0,-1"),
         "--budget: expected comma-separated integers >= 0, got '0,-1'", unchanged=("{run}",)),
    Case("train-jsma-items-mf", (*TRAIN, "adv.method=jsma-items"),
         "adv.method=jsma-items attacks item histories; model.name=mf has none"),
    # JSMA on the feature models' fields (issue 19): a model with fields, a dataset with side
    # features, a budget they can pay
    Case("train-jsma-fields-mf", (*TRAIN, "adv.method=jsma-fields"),
         "adv.method=jsma-fields changes feature fields; model.name=mf has none"),
    Case("train-jsma-fields-no-features", (*TRAIN, "model.name=twotower", "adv.method=jsma-fields"),
         "adv.method=jsma-fields changes feature fields, and {data} has no side features"),
    Case("train-jsma-fields-budget-above-fields",
         ("train", "--output", "{d}/out", "data.source={d}/f", "model.dim=8", "train.epochs=1",
          "model.name=twotower", "adv.method=jsma-fields", "adv.budget=2"),
         "adv.budget=2: above the 1 feature field of each example (item_timestamp)",
         item_feature_data),
    Case("evaluate-target-items-empty-name", ("evaluate", "--run", "{run}", "--attack",
                                              "jsma-items", "--target-items", "1,,2"),
         "expected comma-separated names, none empty, got '1,,2'", unchanged=("{run}",)),
    Case("evaluate-jsma-fields-on-mf", ("evaluate", "--run", "{run}", "--attack", "jsma-fields"),
         "--attack jsma-fields changes feature fields; model.name=mf has none",
         unchanged=("{run}",)),
    Case("evaluate-jsma-fields-similarity", ("evaluate", "--run", "{run}", "--attack",
                                             "jsma-fields", "--similarity", "0.5"),
         "--similarity: only jsma-items (which swaps history items) takes it",
         unchanged=("{run}",)),
    Case("evaluate-eps-with-budget-attacks-only",
         ("evaluate", "--run", "{run}", "--attack", "jsma-fields", "--eps", "0,0.5"),
         "--eps: jsma-fields changes discrete inputs, by --budget, not embeddings",
         unchanged=("{run}",)),
    # several adversaries (adv.mix): each entry an attack the model can take, named in errors
    Case("train-mix-not-a-list", (*TRAIN, "adv.mix=fgm"), "adv.mix: Input should be a valid list"),
    Case("train-mix-jsma-items-mf", (*TRAIN, "adv.mix=[{{method: jsma-items, lambda: 0.5}}]"),
         "adv.mix[0].method=jsma-items attacks item histories; model.name=mf has none"),
    Case("train-mix-negative-lambda", (*TRAIN, "adv.mix=[{{method: fgm, lambda: -1}}]"),
         "adv.mix[0].lambda: Input should be greater than or equal to 0"),
    Case("train-mix-method-none", (*TRAIN, "adv.mix=[{{method: fgm}}, {{lambda: 0.5}}]"),
         "adv.mix[1].method=none makes no attack"),
    Case("train-mix-null-entry", (*TRAIN, "--config", "{d}/c.yaml"),
         "adv.mix[1]: Input should be a valid dictionary",
         write("c.yaml", "adv:\n  mix:\n    - method: fgm\n    -\n")),
    Case("train-mix-nan-lambda-in-config", (*TRAIN, "--config", "{d}/c.yaml"),
         "adv.mix[0].lambda: Input should be a finite number",
         write("c.yaml", "adv:\n  mix:\n    - {method: fgm, lambda: .nan}\n")),
    Case("train-similarity-without-jsma-items",
         ("train", "--output", "{d}/out", "data.source={d}/f", "model.dim=8", "train.epochs=1",
          "model.name=twotower", "adv.method=jsma-fields", "adv.similarity=0.5"),
         "adv: similarity=0.5: only method=jsma-items (which swaps history items) takes it, not "
         "method=jsma-fields", item_feature_data),
    Case("train-mix-jsma-items-budget-above-max-len",
         (*TRAIN, "model.name=sasrec", "model.max_len=5", "adv.method=fgm",
          "adv.mix=[{{method: jsma-items, budget: 6}}]"),
         "adv.mix[0].budget=6: above model.max_len=5, the most history items a sequence holds"),
    Case("train-positions-without-jsma-items", (*TRAIN, "adv.method=fgm", "adv.positions=one"),
         "adv: positions=one: only method=jsma-items (which swaps history items) takes it, not "
         "method=fgm"),
    Case("train-mix-similarity-without-jsma-items",
         (*TRAIN, "adv.mix=[{{method: fgm}}, {{method: pgd, similarity: 0.5}}]"),
         "adv.mix[1]: similarity=0.5: only method=jsma-items"),
]

# --- data: columns, types, values ----------------------------------------------------------------
DETECT = ("detect", "--data", "{data}", "--output", "{d}/out")


def hashed_users(p: Places) -> None:
    """The shared raw log prepared at ``{d}/ds`` with its user ids hashed into 16 rows."""
    from advrec.data import prepare

    prepare(str(p.log), "parquet", str(p.d / "ds"), buckets={"user": 16})


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
    Case("prepare-user-col-missing", (*PREPARE, "{d}/out", "--user-col", "nope"),
         "missing user column 'nope'"),
    Case("prepare-kcore-empties", (*PREPARE, "{d}/out", "--kcore", "1000"),
         "{log}: --kcore 1000 removed every interaction"),
    Case("prepare-min-rating-empties", (*PREPARE, "{d}/out", "--min-rating", "100"),
         "{log}: --min-rating 100.0 removed every interaction"),
    Case("prepare-csv-rating-not-numeric", CSV,
         "{d}/log.csv: column 'rating' has a non-numeric value 'abc' at data row 1",
         write("log.csv", HEADER + "1,2,abc,5\n2,3,4,6\n")),
    Case("prepare-csv-timestamp-not-numeric", CSV,
         "{d}/log.csv: column 'timestamp' has a non-numeric value 'yesterday' at data row 1",
         write("log.csv", HEADER + "1,2,4,yesterday\n2,3,4,6\n")),
    Case("prepare-csv-nan-rating", CSV,
         "{d}/log.csv: column 'rating' has a missing, NaN or infinite value at data row 2",
         write("log.csv", HEADER + "1,2,4,1\n2,3,nan,6\n")),
    Case("prepare-csv-inf-rating", CSV,
         "{d}/log.csv: column 'rating' has a missing, NaN or infinite value at data row 1",
         write("log.csv", HEADER + "1,2,inf,1\n2,3,4,6\n")),
    Case("prepare-csv-timestamp-out-of-range", CSV,
         "{d}/log.csv: column 'timestamp' has a time out of range at data row 2",
         write("log.csv", HEADER + "1,2,4,1\n2,3,4,1e300\n")),
    Case("prepare-csv-timestamp-minus-inf", CSV,
         "{d}/log.csv: column 'timestamp' has a missing, NaN or infinite value at data row 1",
         write("log.csv", HEADER + "1,2,4,-inf\n2,3,4,6\n")),
    Case("prepare-min-rating-nan", (*PREPARE, "{d}/out", "--min-rating", "nan"),
         "--min-rating/data.min_rating must be a finite number, not nan"),
    Case("prepare-csv-empty-file", CSV, "{d}/log.csv: empty file", write("log.csv", "")),
    Case("prepare-csv-header-only", CSV, "{d}/log.csv: empty file (no interactions)",
         write("log.csv", HEADER)),
    Case("prepare-csv-ragged-row", CSV, "{d}/log.csv: cannot parse",
         write("log.csv", "user_id,item_id\n1,2,3,4\n")),
    Case("prepare-csv-label-not-binary", (*CSV, "--label-col", "click"),
         "{d}/log.csv: label column 'click' has '5' at data row 2 (expected only 0/1)",
         write("log.csv", "user_id,item_id,click\n1,2,0\n1,3,5\n2,3,1\n")),
    Case("prepare-csv-label-col-missing", (*CSV, "--label-col", "click"),
         "{d}/log.csv: missing label column 'click'", write("log.csv", "user_id,item_id\n1,2\n")),
    Case("prepare-movielens-no-ratings", ("prepare", "--input", "{d}/ml", "--format",
                                          "movielens", "--output", "{d}/out"),
         "{d}/ml: no MovieLens ratings file", write("ml/README", "hi")),
    Case("prepare-movielens-corrupt-zip", ("prepare", "--input", "{d}/ml.zip", "--format",
                                           "movielens", "--output", "{d}/out"),
         "{d}/ml.zip: not a zip archive", write("ml.zip", b"PK\x03\x04 not a zip")),
    Case("prepare-movielens-bad-rating", ("prepare", "--input", "{d}/ml", "--format",
                                          "movielens", "--output", "{d}/out"),
         "{d}/ml/ratings.dat: column 'rating' has a non-numeric value 'x' at data row 2",
         write("ml/ratings.dat", "1::2::3::4\n1::3::x::5\n")),
    Case("prepare-recbole-untyped-header", ("prepare", "--input", "{d}/r.inter", "--format",
                                            "recbole", "--output", "{d}/out"),
         "{d}/r.inter: header field 'user_id' is not name:type",
         write("r.inter", "user_id\titem_id\trating\n1\t2\t3\n")),
    Case("prepare-recbole-missing-user", ("prepare", "--input", "{d}/r.inter", "--format",
                                          "recbole", "--output", "{d}/out"),
         "{d}/r.inter: missing user column 'user_id'",
         write("r.inter", "uid:token\titem_id:token\n1\t2\n")),
    Case("prepare-sasrec-short-line", ("prepare", "--input", "{d}/s.txt", "--format", "sasrec",
                                       "--output", "{d}/out"),
         "{d}/s.txt: cannot parse", write("s.txt", "1 2\n1\n")),
    Case("prepare-sasrec-empty", ("prepare", "--input", "{d}/s.txt", "--format", "sasrec",
                                  "--output", "{d}/out"), "{d}/s.txt: empty file",
         write("s.txt", "")),
    Case("train-source-missing", (*TRAIN[:3], "data.source={d}/nope", *TRAIN[4:]),
         "{d}/nope: file not found"),
    Case("train-source-unknown-format", (*TRAIN[:3], "data.source={d}/notes", *TRAIN[4:]),
         "{d}/notes: cannot tell the log's format", write("notes", "hello")),
    Case("train-dataset-missing-split", DATASET, "{d}/ds/valid.parquet: missing",
         both(copy("data", "ds"), writable("ds"), lambda p: (p.d / "ds/valid.parquet").unlink())),
    Case("train-dataset-truncated-parquet", DATASET, "{d}/ds/train.parquet: not a Parquet file",
         both(copy("data", "ds"), truncate("ds/train.parquet", 200))),
    Case("train-dataset-string-ids", DATASET,
         "{d}/ds/train.parquet: column 'user' has type string, not integer indices", string_ids),
    # the path the user gave, not fsspec's file:// URL
    Case("train-resume-truncated-state", ("train", "--resume", "{d}/run"),
         "error: {d}/run/checkpoints/epoch-000000.pt: not an advrec checkpoint",
         both(copy_run(), writable(), unfinished, truncate("run/checkpoints/epoch-000000.pt", 100)),
         absent=()),
    Case("evaluate-run-missing", ("evaluate", "--run", "{d}/nope"),
         "{d}/nope: not a run directory"),
    Case("evaluate-truncated-model", ("evaluate", "--run", "{d}/run"),
         "{d}/run/checkpoint/model.pt: not an advrec checkpoint",
         both(copy_run(), writable(), truncate("run/checkpoint/model.pt", 100)),
         absent=("{d}/run/robustness.json",)),
    Case("evaluate-no-config", ("evaluate", "--run", "{d}/run"),
         "{d}/run/config.yaml: config file not found",
         both(copy_run(), writable(), lambda p: (p.d / "run/config.yaml").unlink())),
    Case("evaluate-no-model", ("evaluate", "--run", "{d}/run"),
         "{d}/run/checkpoint/model.pt: checkpoint not found",
         both(copy_run(), writable(), lambda p: (p.d / "run/checkpoint/model.pt").unlink())),
    Case("plot-no-robustness", ("plot", "{run}", "--output", "{d}/out.png"),
         "{run}/robustness.json: not found", absent=("{d}/out.png*",)),
    Case("plot-corrupt-robustness", ("plot", "{d}/run", "--output", "{d}/out.png"),
         "{d}/run/robustness.json: not valid JSON",
         both(copy_run(), write("run/robustness.json", "{bad")), absent=("{d}/out.png*",)),
    Case("plot-robustness-a-list", ("plot", "{d}/run", "--output", "{d}/out.png"),
         "{d}/run/robustness.json: not a robustness curve",
         both(copy_run(), write("run/robustness.json", "[1, 2]")), absent=("{d}/out.png*",)),
    Case("plot-robustness-bad-eps", ("plot", "{d}/run", "--output", "{d}/out.png"),
         "{d}/run/robustness.json: not a robustness curve",
         both(copy_run(), write("run/robustness.json", '{"fgm": {"x": {"ndcg@5": 0.3}}}')),
         absent=("{d}/out.png*",)),
    Case("plot-metric-missing", ("plot", "{d}/run", "--output", "{d}/out.png", "--metric",
                                 "nope"), "{d}/run/robustness.json: no curve has metric 'nope'",
         both(copy_run(), write("run/robustness.json", ROBUSTNESS)), absent=("{d}/out.png*",)),
    # evaluate merges its curve into the old file: a bad one fails before the attacks
    Case("evaluate-robustness-a-list", ("evaluate", "--run", "{d}/run", "--eps", "0"),
         "{d}/run/robustness.json: not a robustness curve",
         both(copy_run(), write("run/robustness.json", "[1, 2]")),
         absent=("{d}/run/robustness.png",), unchanged=("{d}/run/robustness.json",)),
    # detect: a bad selection or dataset fails before anything is written
    Case("detect-remove-zero", (*DETECT, "--remove", "0"),
         "argument --remove: expected a positive integer, got '0'"),
    Case("detect-remove-every-user", (*DETECT, "--remove", "1000"),
         "--remove 1000: expected 1 .. "),
    Case("detect-threshold-nan", (*DETECT, "--threshold", "nan"),
         "argument --threshold: expected a finite number, got 'nan'"),
    Case("detect-threshold-word", (*DETECT, "--threshold", "high"),
         "argument --threshold: expected a number, got 'high'"),
    Case("detect-remove-and-threshold", (*DETECT, "--remove", "3", "--threshold", "2"),
         "argument --threshold: not allowed with argument --remove"),
    Case("detect-not-a-dataset", ("detect", "--data", "{d}/nope", "--output", "{d}/out"),
         "{d}/nope: not a prepared dataset"),
    Case("detect-dataset-string-ids", ("detect", "--data", "{d}/ds", "--output", "{d}/out"),
         "{d}/ds/train.parquet: column 'user' has type string, not integer indices", string_ids),
    Case("detect-hashed-users", ("detect", "--data", "{d}/ds", "--output", "{d}/out"),
         "{d}/ds: its user ids are hashed into buckets", hashed_users),
    Case("detect-output-dataset", (*DETECT[:-1], "{d}/ds"),
         "{d}/ds: exists and is not a detection output", copy("data", "ds"),
         absent=("{d}/ds.tmp-*",), unchanged=("{d}/ds",)),
    Case("detect-output-in-input", ("detect", "--data", "{d}/ds", "--output", "{d}/ds/out",
                                    "--remove", "3"), "{d}/ds/out: overlaps the input {d}/ds",
         copy("data", "ds"), absent=("{d}/ds/out*",), unchanged=("{d}/ds",)),
    # target items (--targets FILE, eval.targets): raw ids looked up in the dataset's items
    Case("train-targets-unknown-id", ("train", "--output", "{d}/out", "data.source={data}",
                                      "--targets", "{d}/t.json"),
         "{d}/t.json: item 'nope' is not an item of {data}",
         write("t.json", '{"items": ["nope"], "attack": "random"}')),
    Case("train-targets-missing", ("train", "--output", "{d}/out", "data.source={data}",
                                   "eval.targets={d}/nope.json"), "{d}/nope.json: file not found"),
    Case("train-targets-not-json", ("train", "--output", "{d}/out", "data.source={data}",
                                    "--targets", "{d}/t.json"), "{d}/t.json: not valid JSON",
         write("t.json", "{items")),
    Case("train-targets-no-items", ("train", "--output", "{d}/out", "data.source={data}",
                                    "--targets", "{d}/t.json"), "{d}/t.json: not a targets.json",
         write("t.json", '{"indices": [3]}')),
    Case("evaluate-targets-unknown-id", ("evaluate", "--run", "{d}/run", "--eps", "0",
                                         "--targets", "{d}/t.json"),
         "{d}/t.json: item 'nope' is not an item of {data}",
         both(copy_run(), write("t.json", '{"items": ["nope"]}')),
         absent=("{d}/run/robustness.json", "{d}/run/robustness.png")),
    Case("plot-target-no-section", ("plot", "{run}", "--target", "--output", "{d}/out.png"),
         "{run}/metrics.json: no target metrics", absent=("{d}/out.png*",)),
    Case("plot-target-section-a-list", ("plot", "{d}/run", "--target", "--output",
                                         "{d}/out.png"),
         "{d}/run/metrics.json: its target section is not what `advrec train` writes",
         both(copy_run(), writable(), write("run/metrics.json", '{"target": [1, 2]}')),
         absent=("{d}/out.png*",)),
]

# --- storage, resources and signals -------------------------------------------------------------
S3_ENV = {"AWS_ACCESS_KEY_ID": "hostile", "AWS_SECRET_ACCESS_KEY": "hostile"}

RUNTIME: list[Case] = [
    # an object store that accepts the connection and never answers: an error naming it, in
    # seconds (the bucket check's timeout), not a hang
    Case("prepare-silent-object-store", ("prepare", "--input", "s3://b/x", "--format", "parquet",
                                         "--output", "{d}/out"),
         "s3://b at {silent}: cannot reach the object store",
         env={**S3_ENV, "AWS_ENDPOINT_URL": "{silent}"}),
    Case("prepare-bad-s3-check-timeout", ("prepare", "--input", "s3://b/x", "--format",
                                          "parquet", "--output", "{d}/out"),
         "ADVREC_S3_CHECK_TIMEOUT='abc': not a positive number of seconds",
         env={**S3_ENV, "AWS_ENDPOINT_URL": "{silent}", "ADVREC_S3_CHECK_TIMEOUT": "abc"}),
    # SIGINT and SIGTERM: one line, 130 or 143, temporary outputs gone; a run stopped before its
    # first checkpoint leaves nothing; a replacement stopped keeps the finished run it replaces
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
    # a job server nobody runs: an error naming it within seconds, not a hang
    Case("jobs-list-closed-port", ("jobs", "list", "--address", CLOSED),
         f"{CLOSED}: no Ray job server answers there"),
]

# --- poisoning: advrec poison's bad input ---------------------------------------------------------
POISON = ("poison", "--data", "{data}", "--output", "{d}/out", "--attack")


def poisoned(p: Places) -> None:
    """A poisoned copy of the shared dataset at ``{d}/p``."""
    assert main(["poison", "--data", str(p.data), "--output", str(p.d / "p"), "--attack",
                 "random", "--fake-users", "2"]) == 0


def hashed_users(p: Places) -> None:
    """The shared log prepared at ``{d}/h`` with its user ids hashed."""
    assert main(["prepare", "--input", str(p.log), "--format", "parquet", "--output",
                 str(p.d / "h"), "--user-buckets", "16"]) == 0


POISONING: list[Case] = [
    Case("poison-unknown-target", (*POISON, "random", "--target-items", "1,nope"),
         "--target-items: item 'nope' is not an item of {data} (items.parquet)"),
    Case("poison-share-zero", (*POISON, "random", "--fake-users", "0"),
         "--fake-users 0: expected a share of the genuine users in (0, 1)"),
    Case("poison-share-negative", (*POISON, "random", "--fake-users=-0.5"),
         "--fake-users -0.5: expected a share of the genuine users in (0, 1)"),
    Case("poison-share-one", (*POISON, "random", "--fake-users", "1.0"),
         "--fake-users 1.0: expected a share of the genuine users in (0, 1)"),
    Case("poison-filler-over-catalogue", (*POISON, "random", "--filler", "1000"),
         "--filler 1000: a profile holds at most the catalogue less the targets"),
    Case("poison-unknown-attack", (*POISON, "nope"), "--attack: unknown attack 'nope'"),
    Case("poison-poisoned-without-force", ("poison", "--data", "{d}/p", "--output", "{d}/out",
                                           "--attack", "bandwagon"),
         "{d}/p: already poisoned (random attack); pass --force", poisoned,
         unchanged=("{d}/p",)),
    Case("poison-targets-and-target-items", (*POISON, "random", "--targets", "2",
                                             "--target-items", "1"),
         "--targets and --target-items exclude each other"),
    Case("poison-hashed-users", ("poison", "--data", "{d}/h", "--output", "{d}/out", "--attack",
                                 "random"), "{d}/h: its user ids are hashed",
         hashed_users),
    # a hand-edited poison section of meta.json: one line naming it, never a crash, nor fakes
    # counted as genuine users (or the reverse) in a detection report or a target metric
    Case("detect-poison-genuine-string", ("detect", "--data", "{d}/p", "--output", "{d}/out"),
         "{d}/p/meta.json: poison section", both(poisoned, edit(
             "p/meta.json", '"genuine_users": 60', '"genuine_users": "sixty"'))),
    Case("detect-poison-genuine-over-users", ("detect", "--data", "{d}/p", "--output",
                                              "{d}/out"),
         "{d}/p/meta.json: poison section", both(poisoned, edit(
             "p/meta.json", '"genuine_users": 60', '"genuine_users": 100'))),
    Case("detect-poison-section-list", ("detect", "--data", "{d}/p", "--output", "{d}/out"),
         "{d}/p/meta.json: poison section [1] does not match num_users", both(poisoned, edit(
             "p/meta.json", '"poison": {', '"poison": [1], "was": {'))),
    Case("train-poison-genuine-negative", ("train", "--output", "{d}/out",
                                           "data.source={d}/p", "model.dim=8",
                                           "train.epochs=1"),
         "{d}/p/meta.json: poison section", both(poisoned, edit(
             "p/meta.json", '"genuine_users": 60', '"genuine_users": -1'))),
    Case("poison-force-poison-genuine-null", ("poison", "--data", "{d}/p", "--output",
                                              "{d}/out", "--attack", "random", "--force"),
         "{d}/p/meta.json: poison section", both(poisoned, edit(
             "p/meta.json", '"genuine_users": 60', '"genuine_users": null'))),
    # a count of fakes beyond the genuine users (a share >= 1 is refused): 10^9 filled memory
    Case("poison-fake-count-huge", (*POISON, "random", "--fake-users", "1000000000"),
         "--fake-users 1000000000: at most as many fake users as genuine ones, 60"),
    # an empty training split: nothing to imitate (was 'expected 1 to 0' or a numpy traceback)
    Case("poison-empty-train", ("poison", "--data", "{d}/e", "--output", "{d}/out", "--attack",
                                "random", "--target-items", "1"),
         "{d}/e/train.parquet: no training rows of genuine users", both(
             copy("data", "e"), lambda p: pq.write_table(
                 pq.read_table(p.d / "e/train.parquet").slice(0, 0), p.d / "e/train.parquet"))),
    # a targets.json of 10^6 items: a one-line error in seconds (a quadratic duplicate check
    # ran for hours)
    Case("train-targets-million-items", (*TRAIN, "--targets", "{d}/t.json"),
         "{d}/t.json: item '", lambda p: (p.d / "t.json").write_text(
             json.dumps({"items": [str(i) for i in range(10**6)]}))),
]

STREAM = ("stream", "--output", "{d}/out", "--quiet", "--window", "1d", "model.dim=8",
          "train.epochs=1")


def partition_without(column: str) -> Setup:
    """A setup that writes ``{d}/days``: the shared log as two day partitions, the second
    without ``column``."""
    def setup(p: Places) -> None:
        table = pq.read_table(p.log)
        half = table.num_rows // 2
        for day, part in (("dt=2020-01-01", table.slice(0, half)),
                          ("dt=2020-01-02", table.slice(half).drop_columns([column]))):
            (p.d / "days" / day).mkdir(parents=True)
            pq.write_table(part, p.d / "days" / day / "part-00000.parquet")
    return setup


STREAMS: list[Case] = [
    Case("stream-bad-window", (*STREAM, "data.source={log}", "--window", "1w"),
         "--window: '1w' is not a window"),
    Case("stream-missing-source", (*STREAM, "data.source={d}/nope"), "{d}/nope: file not found"),
    Case("stream-prepared-source", (*STREAM, "data.source={data}"),
         "is a prepared dataset; a stream replays a raw log"),
    Case("stream-ctr-model", (*STREAM, "data.source={log}", "model.name=deepfm"),
         "model.name=deepfm: a stream trains ranking models"),
    Case("stream-replay-retrain", (*STREAM, "data.source={log}", "--update", "retrain",
                                   "--replay", "5"), "--replay: only an incremental stream"),
    Case("stream-unknown-update", (*STREAM, "data.source={log}", "--update", "sometimes"),
         "--update: 'sometimes' is not one of incremental, retrain, frozen"),
    Case("stream-expire-retrain", (*STREAM, "data.source={log}", "--update", "retrain",
                                   "--expire-after", "2"),
         "--expire-after: only an incremental stream's tables free rows"),
    Case("stream-follow-poll-zero", ("stream", "--output", "{d}/out", "--follow", "--poll", "0",
                                     "data.source={log}"),
         "--poll: expected a number in [0.001, 1e+09], got '0'"),
    # a partition that lacks a column: named, and nothing of the stream written
    Case("stream-partition-missing-column", (*STREAM, "data.source={d}/days"),
         "missing item column 'item_id'", partition_without("item_id")),
    # keys a window's run refuses, or a stream cannot honour: refused before anything is written
    Case("stream-fast-guard", (*STREAM, "data.source={log}", "adv.method=fgm", "adv.schedule=fast",
                               "eval.robust_every=1"),
         "adv.guard=0.5: schedule=fast's guard watches robust metrics on validation rows"),
    Case("stream-init-from", (*STREAM, "data.source={log}", "train.init_from={run}",
                              "train.init_optimizer=true"),
         "train.init_from='{run}': a stream's first window trains from scratch"),
    Case("stream-jsma-fields", (*STREAM, "data.source={log}", "model.name=twotower",
                                "adv.mix=[{{method: jsma-fields}}]"),
         "adv.mix[0].method=jsma-fields: a stream trains on the log's interactions"),
    Case("stream-poll-without-follow", (*STREAM, "data.source={log}", "--poll", "5"),
         "--poll: applies to --follow only"),
    # a user's directory where the stream's link to its newest window goes
    Case("stream-latest-not-a-link", (*STREAM, "data.source={log}"),
         "{d}/out/latest: is not the link a stream publishes its newest window by",
         both(write("out/stream.json", '{"advrec_stream": "0.1"}'),
              write("out/latest/notes.txt", "mine")),
         absent=("{d}/out.tmp-*", "{d}/out/data"), unchanged=("{d}/out/latest",)),
    Case("stream-latest-json-a-directory", (*STREAM, "data.source={log}"),
         "{d}/out/latest.json: is a directory, where a stream names its newest window",
         both(write("out/stream.json", '{"advrec_stream": "0.1"}'),
              write("out/latest.json/notes.txt", "mine")),
         absent=("{d}/out.tmp-*", "{d}/out/data"), unchanged=("{d}/out/latest.json",)),
    # a directory name past the filesystem's 255 bytes: makedirs fails where the lock goes
    Case("stream-output-cannot-be-created",
         ("stream", "--output", "{d}/" + "x" * 300, *STREAM[3:], "data.source={log}"),
         "{d}/" + "x" * 300 + ": cannot be created (File name too long)"),
    Case("stream-foreign-output", (*STREAM, "data.source={log}"),
         "{d}/out: exists and is not an advrec stream", write("out/notes.txt", "mine"),
         absent=("{d}/out.tmp-*", "{d}/out/stream.json"), unchanged=("{d}/out",)),
]

CASES = [*SECURITY, *OUTPUTS, *CONFIG, *DATA, *RUNTIME, *POISONING, *STREAMS]


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


@pytest.fixture(scope="module")
def silent() -> Iterator[str]:
    """The URL of a TCP server on 127.0.0.1 that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):  # the listening socket shut down: done
            while True:
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept
    server.close()
    thread.join(timeout=10)
    for conn in accepted:
        conn.close()


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
                              timeout=300, check=False)
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
def test_hostile_input(case: Case, shared: tuple[Path, Path, Path], silent: str,
                       tmp_path: Path) -> None:
    places = Places(tmp_path, *shared, silent=silent)
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
