"""`advrec tune`: a Ray Tune search over any config keys, each trial a full `advrec train` run."""

from advrec.tune.search import resume_tune, run_tune

__all__ = ["resume_tune", "run_tune"]
