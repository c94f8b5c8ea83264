"""Ranking metrics, clean evaluation, robustness evaluation and plots."""

from advrec.metrics.evaluate import evaluate
from advrec.metrics.ranking import metrics_from_hits, topk_hits
from advrec.metrics.robustness import robustness_curve, shifted_tables, table_attack

__all__ = ["evaluate", "metrics_from_hits", "robustness_curve", "shifted_tables", "table_attack",
           "topk_hits"]
