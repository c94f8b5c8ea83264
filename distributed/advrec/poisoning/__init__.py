"""Fake users in the log: poisoning attacks, target-item metrics and fraud detection.

The layout of a poisoned dataset is fixed here, in one place, because three parts read it: the
attack that writes it (``advrec poison``), the target metrics and the detector.
"""

from advrec.poisoning.layout import (
    FAKE_PREFIX,
    TARGETS_FILE,
    FillerAttack,
    TrainLog,
    fake_users,
    genuine_users,
)

__all__ = ["FAKE_PREFIX", "TARGETS_FILE", "FillerAttack", "TrainLog", "fake_users",
           "genuine_users"]
