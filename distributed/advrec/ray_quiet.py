"""Quieting Ray's own processes: the ``worker_process_setup_hook`` of a local Ray instance
(`advrec.train.driver.connect`), run in each of its worker processes before any task or actor.

A module of its own, importing nothing heavy: every worker process imports it as it starts."""

from __future__ import annotations

import logging

NOISY = ("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",)
"""Loggers that print a traceback at WARNING for what they call harmless themselves: Ray Train's
controller, whenever a resource request to Ray's autoscaling coordinator (nothing to autoscale
on one machine) takes over 5 s, which a busy 2-core machine makes common."""


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet() -> None:
    """Keep only the errors of the `NOISY` loggers in this process. A filter, not a level: Ray
    Train's controller configures its logging after this runs (`logging.config.dictConfig`),
    which sets the loggers under ``ray.train`` back to NOTSET but keeps their filters."""
    for name in NOISY:
        logging.getLogger(name).addFilter(_ErrorsOnly())
