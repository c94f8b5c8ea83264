"""The one exception type the CLI turns into a one-line error and a non-zero exit, and how its
messages echo a value."""

import reprlib
from typing import Any


class AdvrecError(ValueError):
    """Bad input: a missing file, a bad column or value, a bad config key.

    The message is one line and names the culprit (file, column or config key).
    """


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxlevel = 3


def shown(value: Any) -> str:
    """``value`` as an error message echoes it: its repr on one line, cut to a few dozen
    characters, since a value can be megabytes long or nested deep."""
    return _SHORT.repr(value)


TORCHREC_MISSING = ("model.embeddings=torchrec needs torchrec: run `make torchrec` (CPU: "
                    "fbgemm-gpu-cpu, then torchrec without its CUDA dependency; see README.md)")
"""The error of the optional torchrec backend when torchrec is not installed."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread: a command unwinds as from any failure
    (removing its temporary outputs) and the CLI exits with 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
