"""``adv.schedule``: how adversarial training pays for its attack.

- ``standard``: the attack from scratch on every batch (`advrec.adversarial.perturb`).
- ``free`` (Shafahi et al., NeurIPS 2019): each adversarial batch is trained ``adv.replays``
  times; the first replay trains on the attack's δ, each later one on δ moved one ascent step
  by the gradient the previous replay's backward left on it (`AdversarialObjective`'s
  ``keep_delta``), and the adversarial epochs are divided by the replays
  (`AdvConfig.epochs_run`). A replay costs what a standard FGM step costs (one clean and one
  adversarial forward and backward), so the run costs FGM training's, with δ as strong as
  ``replays`` steps of PGD.
- ``fast`` (Wong et al., ICLR 2020): FGSM/FGM from a random point of the ball with a step of
  1.25·ε (`training_attack`), guarded against catastrophic overfitting (`collapsed`).
- ``accumulate`` (ATTA, Zheng et al., CVPR 2020): one δ per attacked embedding row, kept across
  batches and epochs (`advrec.adversarial.memory`), moved one ascent step per lookup.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advrec.adversarial import Attack
from advrec.config import AdvConfig, Adversary

FAST_STEP = 1.25
"""Wong et al.'s FGSM step from a random start, in ε."""
ACCUMULATE_STEP = 0.1
"""accumulate's FGSM/FGM step per lookup, in ε. A row meets other rows at every lookup (a
user other items), so its δ is worth more as an average of the directions of its lookups than
as the last one: on ml-100k APR-MF (benchmarks/cheap_at.py, seed 0) steps of ε, 0.3·ε, 0.1·ε,
0.05·ε and 0.02·ε left drops under PGD-10 of 16.0, 12.9, 12.0, 12.4 and 12.0 %."""


def attack_from_config(adv: Adversary) -> Attack:
    """The attack of one adversary of the config (``adv`` itself or an ``adv.mix`` entry)."""
    return Attack(method=adv.method, eps=adv.eps, steps=adv.steps, step_size=adv.step_size,
                  norm=adv.norm, random_start=adv.random_start, relative=adv.relative,
                  l0=adv.l0, budget=adv.budget, similarity=adv.similarity,
                  positions=adv.positions)


def training_attack(adv: AdvConfig) -> Attack:
    """The attack ``adv`` trains against under its schedule.

    ``fast``: one PGD step from a random start, of 1.25·ε in the method's norm (L∞ for FGSM,
    L2 for FGM). ``free``: FGSM's and FGM's ascent steps are ``adv.step_size``, by default ε
    (their own step: a first step from zero is the method's δ); ``accumulate``: by default
    ``ACCUMULATE_STEP``·ε; PGD's step as configured.
    """
    attack = attack_from_config(adv)
    if adv.schedule == "fast":
        return dataclasses.replace(attack, method="pgd", steps=1, random_start=True,
                                   step_size=FAST_STEP * adv.eps, norm=attack.ascent_norm)
    if adv.method in ("fgsm", "fgm") and adv.step_size is None:
        if adv.schedule == "free":
            return dataclasses.replace(attack, step_size=adv.eps)
        if adv.schedule == "accumulate":
            return dataclasses.replace(attack, step_size=ACCUMULATE_STEP * adv.eps)
    return attack


def collapsed(record: dict[str, Any], history: list[dict[str, Any]], monitor: str,
              higher: bool, guard: float) -> bool:
    """``fast``'s guard: whether this epoch's ``robust/<monitor>`` fell below ``guard`` times
    the best of the adversarial epochs before it (above best / guard for a lower-is-better
    metric). FGSM training can lose its robustness within an epoch while its clean metric
    stays up (catastrophic overfitting, Wong et al. 2020), so the clean monitor alone would
    keep such an epoch."""
    key = f"robust/{monitor}"
    before = [h[key] for h in history if h.get("adversarial") and key in h]
    if guard == 0 or key not in record or not before:
        return False
    if higher:
        return record[key] < guard * max(before)
    return record[key] > min(before) / guard
