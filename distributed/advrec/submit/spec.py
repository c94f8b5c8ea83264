"""Job specs: the YAML files under ``jobs/`` that say what a Ray job runs and where its outputs go.

A spec names an advrec command (``train``, ``tune`` or ``stream``, with the command's own
``flags``: a stream's ``--window`` or ``--follow``), its run config (a file beside the spec, or
a URL) with overrides, the storage its outputs go to, Ray's runtime environment for the job
(``working_dir``, ``pip``, ``env_vars``, ``image_uri``, ...: passed to Ray as written) and the
resources of the job's entrypoint (the process that runs the command; the training itself runs on
Ray Train workers, which reserve their own)::

    command: train
    config: configs/ml100k-apr.yaml
    overrides: {train.epochs: 50}
    storage: s3://my-bucket/advrec/jobs
    runtime_env: {env_vars: {OMP_NUM_THREADS: "1"}}
    resources: {num_cpus: 0}

Each submission writes its resolved run config to ``<storage>/<id>.yaml`` and its outputs (the run
or experiment directory) to ``<storage>/<id>/``: the job reads the config from the same storage
it writes to, so a spec works on any cluster that can reach that storage, with or without a
``working_dir``.
"""

from __future__ import annotations

import os
import shlex
from contextlib import redirect_stderr
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from advrec import io
from advrec.config import (
    Section,
    apply_overrides,
    build_config,
    dump_config,
    error_line,
    load_raw,
    read_mapping,
    with_values,
)
from advrec.errors import AdvrecError


class Resources(Section):
    """What the job's entrypoint reserves (Ray's ``entrypoint_num_cpus`` and friends)."""
    num_cpus: float = Field(0, ge=0, description="CPUs of the entrypoint (0: Ray's default).")
    num_gpus: float = Field(0, ge=0, description="GPUs of the entrypoint (0: Ray's default).")
    memory: int | None = Field(None, gt=0, description="Bytes of memory the entrypoint reserves.")
    custom: dict[str, float] = Field(default_factory=dict, description="Custom resources.")


class JobSpec(Section):
    """One job spec file (see the module's docstring)."""
    command: Literal["train", "tune", "stream"]
    flags: list[str] = Field(default_factory=list, description="More flags of the command, as "
                             "on its command line (stream: --window 7d, or --follow --poll 60; "
                             "--keep 7, ...).")
    config: str = Field(description="The run config: a path relative to the spec, or a URL.")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="key: value overrides of the run config.")
    storage: str = Field(description="Where each submission's config and outputs go: a path "
                         "(for a local head or a shared filesystem) or a URL (s3://, gs://).")
    runtime_env: dict[str, Any] = Field(
        default_factory=dict, description="Ray's runtime environment for the job, as is.")
    resources: Resources = Field(default_factory=Resources)
    description: str | None = None


@dataclass(frozen=True)
class Job:
    """A spec resolved for one submission: its validated run config (YAML text) and Ray's
    arguments."""
    name: str
    spec: JobSpec
    config_text: str

    def config_url(self, submission_id: str) -> str:
        return io.join(io.absolute(self.spec.storage), f"{submission_id}.yaml")

    def output_url(self, submission_id: str) -> str:
        return io.join(io.absolute(self.spec.storage), submission_id)

    def arguments(self, submission_id: str) -> list[str]:
        """The advrec command line the job runs, on its stored config (`write_config`)."""
        return [self.spec.command, "--config", self.config_url(submission_id),
                "--output", self.output_url(submission_id), *self.spec.flags]

    def entrypoint(self, submission_id: str) -> str:
        """The job's shell command: ``advrec`` with `arguments`."""
        return shlex.join(["advrec", *self.arguments(submission_id)])

    def write_config(self, submission_id: str) -> None:
        """Store the run config the submission's command reads."""
        with io.atomic_file(self.config_url(submission_id)) as f:
            f.write(self.config_text)

    def submit_kwargs(self) -> dict[str, Any]:
        """``JobSubmissionClient.submit_job``'s runtime environment and entrypoint resources."""
        res = self.spec.resources
        return {"runtime_env": self.spec.runtime_env or None,
                "entrypoint_num_cpus": res.num_cpus or None,
                "entrypoint_num_gpus": res.num_gpus or None,
                "entrypoint_memory": res.memory,
                "entrypoint_resources": res.custom or None}


def read_spec(path: str) -> JobSpec:
    """Parse and validate the spec file at ``path``; one-line errors name the file and key."""
    try:
        return JobSpec.model_validate(read_mapping(path, "job spec"))
    except ValidationError as exc:
        raise AdvrecError(f"{path}: {error_line(exc)}") from None


def _check_flags(path: str, spec: JobSpec) -> None:
    """Refuse, naming the spec, flags its command would refuse on the cluster: unknown ones,
    bad values, and a stream with neither or both of ``--window`` and ``--follow``."""
    from advrec.cli import build_parser  # the CLI imports this module

    argv = [spec.command, "--config", "c", "--output", "o", *spec.flags]
    said = StringIO()
    try:
        with redirect_stderr(said):
            args, extra = build_parser().parse_known_args(argv)
    except SystemExit:
        why = said.getvalue().strip().removeprefix("advrec: error: ")
        raise AdvrecError(f"{path}: flags: {why}") from None
    if extra or getattr(args, "overrides", None):
        raise AdvrecError(f"{path}: flags: {' '.join([*extra, *args.overrides])} is not a flag "
                          "of `advrec " + spec.command + "` (config keys go under overrides)")
    if spec.command == "stream":
        if args.follow == (args.window is not None):
            raise AdvrecError(f"{path}: flags: a stream takes --window (a log replayed) or "
                              "--follow (a prefix followed), one of them")
        if args.window is not None:
            from advrec.stream.windows import parse_window

            try:
                parse_window(args.window)
            except AdvrecError as exc:
                raise AdvrecError(f"{path}: flags: {exc}") from None


def load_job(path: str, overrides: list[str]) -> Job:
    """The spec at ``path`` with its run config read (relative to the spec), its overrides and
    then ``overrides`` applied, and validated as `advrec train` or `advrec tune` would, so a bad
    config fails here rather than on the cluster. A local ``data.source`` and ``eval.targets``
    are made absolute: the job does not run in this directory."""
    spec = read_spec(path)
    config = spec.config
    if "://" not in config and not os.path.isabs(config):
        config = str(Path(path).resolve().parent / config)
    if not io.exists(config):
        raise AdvrecError(f"{path}: config: {spec.config}: config file not found")
    raw = apply_overrides(with_values(load_raw(config), spec.overrides), overrides)
    for section, key in (("data", "source"), ("eval", "targets")):
        part = raw.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, str) and "://" not in value:
            raw = with_values(raw, {f"{section}.{key}": io.absolute(value)})
    cfg = build_config(raw)
    _check_flags(path, spec)
    if spec.command == "tune":
        from advrec.tune.search import check_space

        check_space(raw, cfg)
    return Job(name=Path(path).stem, spec=spec, config_text=dump_config(cfg))
