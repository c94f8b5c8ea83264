"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class AdvrecError(ValueError):
    """Bad input: a missing file, a bad column or value, a bad config key.

    The message is one line and names the culprit (file, column or config key).
    """


TORCHREC_MISSING = ("model.embeddings=torchrec needs torchrec: run `make torchrec` (CPU: "
                    "fbgemm-gpu-cpu, then torchrec without its CUDA dependency; see README.md)")
"""The error of the optional torchrec backend when torchrec is not installed."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread: a command unwinds as from any failure
    (removing its temporary outputs) and the CLI exits with 128 + ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
