"""Adversaries on embedding rows and the adversarial training objective."""

from advrec.adversarial.objective import AdversarialObjective, select_targets
from advrec.adversarial.perturb import Attack, GradFn, perturb, project, rank_salient

__all__ = ["AdversarialObjective", "Attack", "GradFn", "perturb", "project", "rank_salient",
           "select_targets"]
