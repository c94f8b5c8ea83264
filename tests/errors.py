"""What a command printed on stderr, less the lines Ray forwards from its actors.

Tests share one Ray instance, whose actors (Ray Train's placement-group cleaner, for one) log to
the driver whenever they like: a line of theirs may land in any later test's captured stderr.
"""

from __future__ import annotations

import re

# Ray prefixes a forwarded actor log line with the actor's name and pid, coloured on a terminal
RAY_ACTOR_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\(\w+ pid=\d+")


def error_line(err: str) -> str | None:
    """The one line a command printed on stderr (Ray's forwarded actor lines left out), or None
    when it printed none or more than one."""
    lines = [line for line in err.splitlines() if not RAY_ACTOR_LINE.match(line)]
    return lines[0] if len(lines) == 1 and err.endswith("\n") else None
