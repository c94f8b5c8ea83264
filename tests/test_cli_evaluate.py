"""`advrec evaluate` takes its attacks, budgets and steps from the run's own config; flags
override them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from advrec.cli import main
from errors import error_line


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch MF run on a tiny synthetic log whose config asks for FGM at ε 0 and 0.3 only."""
    root = tmp_path_factory.mktemp("evaluate")
    assert main(["synth", "--users", "40", "--items", "30", "--interactions", "600",
                 "--output", str(root / "log")]) == 0
    assert main(["train", "--output", str(root / "run"), "--quiet", f"data.source={root / 'log'}",
                 "model.dim=8", "train.epochs=1", "eval.ks=[5]", "eval.attacks=[fgm]",
                 "eval.eps=[0, 0.3]"]) == 0
    return root / "run"


def test_the_runs_config_gives_the_defaults(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--run", str(run), "--quiet"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert {a: sorted(by_eps) for a, by_eps in curve.items()} == {"fgm": ["0.0", "0.3"]}
    metrics = json.loads((run / "metrics.json").read_text())
    assert curve["fgm"]["0.0"]["ndcg@5"] == pytest.approx(metrics["test"]["ndcg@5"])
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table[1:3]] == [["fgm", "0.0000"], ["fgm", "0.3000"]]

    # the flags override the config (and the curve merges with the earlier one)
    assert main(["evaluate", "--run", str(run), "--quiet", "--attack", "pgd", "--eps", "0.5",
                 "--steps", "1"]) == 0
    curve = json.loads((run / "robustness.json").read_text())
    assert {a: sorted(by_eps) for a, by_eps in curve.items()} == {"fgm": ["0.0", "0.3"],
                                                                 "pgd": ["0.5"]}


@pytest.mark.parametrize("flags, culprit", [
    (["--eps", "nan,inf"], "--eps: expected finite numbers >= 0, got 'nan,inf'"),
    (["--eps", "0,1e400"], "--eps: expected finite numbers >= 0"),
    (["--eps", "0,-0.5"], "--eps: expected finite numbers >= 0"),
    (["--eps", "a,b"], "--eps: expected comma-separated numbers, got 'a,b'"),
    (["--attack", "cw"], ("--attack: unknown attack 'cw' (choose fgm, pgd, jsma, jsma-items or "
                          "jsma-fields)")),
    (["--attack", ","], "--attack: name fgm, pgd, jsma, jsma-items or jsma-fields"),
    (["--attack", "jsma", "--l0", "9"], "--l0 9: above the run's model.dim=8"),
    (["--attack", "jsma-fields"], ("--attack jsma-fields changes feature fields; "
                                   "model.name=mf has none")),
    (["--attack", "jsma-fields", "--similarity", "0.5"], "--similarity: only jsma-items"),
    (["--attack", "fgm", "--budget", "1"], "--budget: only jsma-items and jsma-fields"),
    (["--attack", "jsma-items", "--eps", "0.5"], "--eps: jsma-items changes discrete inputs"),
    (["--attack", "jsma-fields,jsma-items", "--l0", "2"],
     "--l0: jsma-fields, jsma-items change discrete inputs, by --budget"),
    (["--attack", "jsma-items", "--steps", "3"], "--steps: jsma-items changes discrete inputs"),
    (["--attack", "jsma-fields", "--target-items", "1"],
     "--attack jsma-fields changes feature fields; model.name=mf has none"),
    # an ε curve records no targets: mixed calls would mix target sets in one curve
    (["--attack", "fgm,jsma-fields", "--target-items", "1"],
     "--target-items: only jsma-items and jsma-fields are targeted"),
    (["--target-items", "1"], "--target-items: only jsma-items and jsma-fields are targeted"),
])
def test_bad_flags_are_one_line(run: Path, flags: list[str], culprit: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    before = (run / "robustness.json").read_bytes() if (run / "robustness.json").exists() else b""
    assert main(["evaluate", "--run", str(run), *flags]) == 2
    err = capsys.readouterr().err
    line = error_line(err)
    assert line and line.startswith(f"advrec: error: {culprit}")
    after = (run / "robustness.json").read_bytes() if (run / "robustness.json").exists() else b""
    assert after == before
