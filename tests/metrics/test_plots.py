"""The robustness plot's layout: ε curves in one row, budget curves (changed inputs) in another."""

from __future__ import annotations

import pytest

from advrec.metrics import plots


def test_budget_curves_get_their_own_row_with_whole_number_ticks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, output: figures.append(fig))
    curve = {"fgm": {"0.0": {"ndcg@10": 0.3}, "0.5": {"ndcg@10": 0.2}},
             "jsma-fields": {"budget": {str(b): {"ndcg@10": 0.3 - 0.05 * b} for b in range(3)}}}
    plots.plot_robustness({"run": curve}, ["ndcg@10"], "unused.png")
    eps_row, budget_row = figures[0].axes
    assert eps_row.get_xlabel().startswith("ε") and budget_row.get_xlabel().startswith("inputs")
    ticks = [t for t in budget_row.get_xticks() if 0 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)  # 0, 1, 2: not 0.25, 0.5, ...
    assert budget_row.lines[0].get_ydata().tolist() == pytest.approx([0.3, 0.25, 0.2])


def test_a_metric_of_some_curves_only_is_drawn_for_those(monkeypatch: pytest.MonkeyPatch) -> None:
    # a targeted curve has the target items' T-HR, the ε curve beside it has not
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, output: figures.append(fig))
    curve = {"fgm": {"0.0": {"ndcg@10": 0.3}, "0.5": {"ndcg@10": 0.2}},
             "jsma-fields:targeted": {"budget": {"0": {"ndcg@10": 0.3, "target/hr@50": 0.01},
                                                 "2": {"ndcg@10": 0.2, "target/hr@50": 0.05}},
                                      "targets": ["7"]}}
    plots.plot_robustness({"run": curve}, ["target/hr@50"], "unused.png")
    eps_row, budget_row = figures[0].axes
    assert not eps_row.lines  # fgm has no T-HR: no line, no error
    assert budget_row.lines[0].get_ydata().tolist() == pytest.approx([0.01, 0.05])
