"""What a search leaves in its experiment directory: every trial's row, the Pareto front of clean
against robust quality, their plot, and ``best.yaml``.

A trial's clean, robust and target values are those of its run's best epoch when it finished
(``metrics.json``: ``valid``, ``robust_valid`` and the ``target`` section's ``valid``), else the
last ones it reported before the scheduler stopped it.
"""

from __future__ import annotations

import io as _bytes_io
import json
from typing import Any

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from advrec import io
from advrec.config import RunConfig, build_config, dump_config, with_values
from advrec.config.policy import TARGET
from advrec.errors import AdvrecError
from advrec.metrics.plots import plot_front

RESULTS = "results"  # .csv and .parquet
FRONT = "pareto"  # .csv and .png
BEST = "best.yaml"


def trial_row(result: Any, cfg: RunConfig, experiment: str) -> dict[str, Any]:
    """One trial's row: id, status, epochs run, its searched values, clean and robust quality,
    and the search's metric."""
    last = result.metrics or {}
    # a trial that failed before its first report has no metrics: its id is in its directory's
    # name, "_trial_<experiment>_<number>_<index>_<values>_<date>"
    trial = last.get("trial_id") or "_".join(result.path.rstrip("/").rsplit("/", 1)[-1]
                                             .split("_")[2:4])
    run = io.join(experiment, "trials", trial)
    monitor = cfg.monitor()[0]
    values = {k: v for k, v in last.items() if k.startswith(("valid/", "robust/", TARGET))}
    status = "error" if result.error else "stopped"
    if io.exists(io.join(run, "metrics.json")):  # finished: its best epoch's values
        final = io.read_json(io.join(run, "metrics.json"))
        values = {f"valid/{k}": v for k, v in final["valid"].items()}
        values.update({f"robust/{k}": v for k, v in final.get("robust_valid", {}).items()})
        values.update({f"{TARGET}{k}": v
                       for k, v in final.get("target", {}).get("valid", {}).items()})
        status = "finished"
    if cfg.tune.weights and all(k in values for k in cfg.tune.weights):
        values["objective"] = sum(w * values[k] for k, w in cfg.tune.weights.items())
    metric, _ = cfg.tune_metric()
    return {"trial": trial, "status": status, "epochs": int(last.get("epochs", 0)),
            # a trial that died before Tune recorded its config has none
            **{k: (result.config or {}).get(k) for k in cfg.tune.space},
            "clean": values.get(f"valid/{monitor}"), "robust": values.get(f"robust/{monitor}"),
            "score": values.get(metric)}


def pareto_front(rows: list[dict[str, Any]], higher_is_better: bool) -> list[dict[str, Any]]:
    """The rows no other row beats on both clean and robust quality."""
    sign = 1.0 if higher_is_better else -1.0
    scored = [r for r in rows if r["clean"] is not None and r["robust"] is not None]
    def beats(a: dict[str, Any], b: dict[str, Any]) -> bool:
        ax, ay, bx, by = (sign * v for v in (a["clean"], a["robust"], b["clean"], b["robust"]))
        return ax >= bx and ay >= by and (ax > bx or ay > by)
    return sorted((r for r in scored if not any(beats(o, r) for o in scored)),
                  key=lambda r: r["clean"])


def _cell(value: Any) -> Any:
    """A table cell: a searched list or mapping (``adv.mix``, ``eval.ks``) as its JSON, which
    CSV can hold (pyarrow writes no list or struct column to CSV: the search's table failed
    after its trials) and an override takes back (JSON is YAML); anything else as it is."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _write_table(rows: list[dict[str, Any]], stem: str, parquet: bool) -> None:
    table = pa.Table.from_pylist([{k: _cell(v) for k, v in r.items()} for r in rows])
    buf = _bytes_io.BytesIO()
    pcsv.write_csv(table, buf)
    with io.atomic_file(f"{stem}.csv", "wb") as f:
        f.write(buf.getvalue())
    if parquet:
        with io.atomic_file(f"{stem}.parquet", "wb") as f:
            pq.write_table(table, f)


def write_results(grid: Any, cfg: RunConfig, experiment: str,
                  user_raw: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.csv``/``.parquet``, ``pareto.csv``/``.png`` and ``best.yaml`` (the user's
    config with the best trial's values) for a finished ``grid`` (a Tune ResultGrid); returns
    a summary: the rows, the front, the best row, and the epochs run against the budget."""
    rows = sorted((trial_row(r, cfg, experiment) for r in grid), key=lambda r: r["trial"])
    if not rows:
        raise AdvrecError(f"{experiment}: the search ran no trial")
    _, mode = cfg.tune_metric()
    monitor, higher = cfg.monitor()
    _write_table(rows, io.join(experiment, RESULTS), parquet=True)
    front = pareto_front(rows, higher)
    if front:
        _write_table(front, io.join(experiment, FRONT), parquet=False)
        plot_front([(r["clean"], r["robust"]) for r in rows if r["robust"] is not None],
                   [(r["clean"], r["robust"]) for r in front], (monitor, monitor),
                   io.join(experiment, f"{FRONT}.png"))
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        raise AdvrecError(f"{experiment}: no trial reported {cfg.tune_metric()[0]}")
    best = (max if mode == "max" else min)(scored, key=lambda r: r["score"])
    values = {k: best[k] for k in cfg.tune.space}
    best_cfg = build_config(with_values(user_raw, values))
    with io.atomic_file(io.join(experiment, BEST)) as f:
        f.write(dump_config(best_cfg))
    return {"rows": rows, "front": front, "best": best,
            "epochs": sum(r["epochs"] for r in rows),
            "budget": len(rows) * cfg.train.epochs}

