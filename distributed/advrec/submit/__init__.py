"""`advrec submit` and `advrec jobs`: job specs (``jobs/``) run as Ray jobs on a cluster."""

from advrec.submit.client import (
    connect_jobs,
    exit_code,
    follow,
    job_info,
    job_rows,
    new_submission_id,
    submit,
)
from advrec.submit.spec import Job, JobSpec, load_job, read_spec

__all__ = ["Job", "JobSpec", "connect_jobs", "exit_code", "follow", "job_info", "job_rows", "load_job",
           "new_submission_id", "read_spec", "submit"]
