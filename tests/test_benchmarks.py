"""The benchmark scripts still run against the current API (one tiny round; no timing is checked)."""

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
