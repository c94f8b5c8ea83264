"""Plots of quality against the attack budget, ε or the number of changed discrete inputs
(jsma-items' history items, jsma-fields' feature fields); several runs can share one figure.
Also a stream's prequential metrics per window (`plot_stream`)."""

from __future__ import annotations

import io as _bytes_io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from advrec import io

Curve = dict[str, dict[str, Any]]
"""{attack: {eps: {metric: value}}}, or for an attack on real inputs {attack: {"budget":
{budget: {metric: value}}, ...}} (`advrec.report`)."""
BUDGET = "budget"
"""The key of a budget curve's points in its attack's section of a `Curve`."""
AXES = {"eps": "ε (per-row budget)", BUDGET: "inputs changed (budget: items, fields)"}


def curve_points(section: dict[str, Any]) -> dict[str, Any]:
    """An attack's points in a `Curve`, ``{eps: metrics}`` or ``{budget: metrics}``: an ε
    curve is the section itself, a budget curve its ``budget`` entry."""
    return section.get(BUDGET, section)


def plot_robustness(curves: dict[str, Curve], metrics: list[str], output: str) -> None:
    """One panel per metric, one line per (run label, attack), metric against ε; budget curves
    (jsma-items, jsma-fields) in a second row of panels, against the budget; PNG to
    ``output``."""
    # (row's x axis, run label, attack, {x: metrics}) for every curve of every run
    lines = [(BUDGET if BUDGET in section else "eps", label, attack, curve_points(section))
             for label, curve in curves.items() for attack, section in curve.items()]
    rows = [axis for axis in AXES if any(line[0] == axis for line in lines)]
    fig, axes = plt.subplots(len(rows), len(metrics),
                             figsize=(4.5 * len(metrics), 3.6 * len(rows)), squeeze=False)
    styles = {"fgm": "-", "pgd": "--", "jsma": "-.", "jsma-items": "-", "jsma-fields": "--"}
    colors = dict(zip(curves, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 8))
    for panels, axis in zip(axes, rows):
        for ax, metric in zip(panels, metrics):
            for _, label, attack, points in (line for line in lines if line[0] == axis):
                xs = sorted(points, key=float)
                if not all(metric in points[x] for x in xs):
                    continue  # a metric of other curves only (a targeted curve's T-HR)
                ax.plot([float(x) for x in xs], [points[x][metric] for x in xs],
                        styles.get(attack, ":"), marker="o", color=colors[label],
                        label=f"{label} {attack}")
            ax.set_xlabel(AXES[axis])
            if axis == BUDGET:  # a count of changed inputs: no fractional ticks
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        panels[0].legend(fontsize=8)
    fig.suptitle("Quality under attack")
    _save(fig, output)


def plot_front(points: list[tuple[float, float]], front: list[tuple[float, float]],
               labels: tuple[str, str], output: str) -> None:
    """Every trial's (clean, robust) point, the Pareto front highlighted; PNG to ``output``."""
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    ax.scatter(*zip(*points), color="0.6", label="trial")
    front = sorted(front)
    ax.plot(*zip(*front), "-o", color="C3", label="Pareto front")
    ax.set_xlabel(f"clean {labels[0]}")
    ax.set_ylabel(f"robust {labels[1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Clean against robust quality, one point per trial")
    _save(fig, output)


def plot_targets(sections: dict[str, dict[str, Any]], output: str) -> None:
    """T-HR@K and T-NDCG@K on the test split, a panel each, a bar per run (its label);
    ``sections``: each run's ``target`` section of metrics.json (all with the same ``k``)."""
    k = next(iter(sections.values()))["k"]
    labels = list(sections)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.3 * len(labels) + 3.0), 3.8),
                             squeeze=False)
    for ax, (metric, name) in zip(axes[0], (("hr", "T-HR"), ("ndcg", "T-NDCG"))):
        values = [sections[label]["test"][f"{metric}@{k}"] for label in labels]
        bars = ax.bar(range(len(labels)), values, color="C3")
        ax.bar_label(bars, fmt="%.4f", fontsize=7)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"{name}@{k} (lower resists better)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("What the attack buys: the target items' exposure to genuine users")
    _save(fig, output)


def _save(fig: plt.Figure, output: str) -> None:
    fig.tight_layout()
    buf = _bytes_io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    with io.atomic_file(output, "wb") as f:
        f.write(buf.getvalue())


def plot_stream(streams: dict[str, list[dict[str, Any]]], metric: str, output: str) -> None:
    """A stream's prequential ``metric`` per window (`advrec stream`'s history, one line per
    stream: the windows whose model was evaluated; dashed, under attack, where measured), and
    beneath it each window's training seconds."""
    fig, (quality, cost) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                        gridspec_kw={"height_ratios": [2, 1]})
    names: list[str] = []
    for label, history in streams.items():
        for record in history:
            if record["window"] not in names:
                names.append(record["window"])
        at = {r["window"]: r for r in history}
        evaluated = [w for w in names if metric in at.get(w, {}).get("prequential", {})]
        line, = quality.plot([names.index(w) for w in evaluated],
                             [at[w]["prequential"][metric] for w in evaluated], marker="o",
                             label=label)
        attacked = [w for w in evaluated if f"robust/{metric}" in at[w]["prequential"]]
        if attacked:  # under eval.robust_attack: dashed, in the stream's colour
            quality.plot([names.index(w) for w in attacked],
                         [at[w]["prequential"][f"robust/{metric}"] for w in attacked],
                         marker="x", linestyle="--", color=line.get_color(),
                         label=f"{label}, attacked")
        trained = [w for w in names if "train_s" in at.get(w, {})]
        cost.plot([names.index(w) for w in trained], [at[w]["train_s"] for w in trained],
                  marker=".", label=label)
    quality.set_ylabel(f"prequential {metric}")
    quality.set_title("each window's model on the next window, before training on it")
    quality.legend(fontsize=8)
    cost.set_ylabel("training s")
    every = -(-len(names) // 40)  # at most 40 names under the axis, or they overlap
    cost.set_xticks(range(0, len(names), every), names[::every], rotation=60, fontsize=7,
                    ha="right")
    cost.set_xlabel("window")
    _save(fig, output)
