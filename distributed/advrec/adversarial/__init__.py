"""Adversaries on embedding rows and the adversarial training objective."""

from advrec.adversarial.objective import AdversarialObjective, select_targets
from advrec.adversarial.perturb import Attack, GradFn, perturb, project

__all__ = ["AdversarialObjective", "Attack", "GradFn", "perturb", "project", "select_targets"]
