"""Planted payloads: pickles that, if ever unpickled, touch a marker file (``PWNED``).

Tests plant them where advrec reads a file a user hands it, and assert a one-line refusal
and that the marker was never created.
"""

from __future__ import annotations

import os
import pickle


class Touch:
    """Pickles (by pickle or torch.save) as ``os.system("touch marker")``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.system, (f"touch {self.marker}",)


def system_pickle(marker: str) -> bytes:
    """A pickle whose loading runs ``touch marker``."""
    return pickle.dumps(Touch(marker))


def dotted_pickle(marker: str, module: str = "torch.distributed.checkpoint.filesystem") -> bytes:
    """A pickle that calls ``os.system`` by a dotted name in ``module`` (which imports ``os``):
    an unpickler that checks only the module lets it through, as pickle resolves
    ``os.system`` there by attribute."""
    return (b"\x80\x04c" + module.encode() + b"\nos.system\n"
            + b"(V" + f"touch {marker}".encode() + b"\ntR.")
