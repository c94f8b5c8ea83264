"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class AdvrecError(ValueError):
    """Bad input: a missing file, a bad column or value, a bad config key.

    The message is one line and names the culprit (file, column or config key).
    """
