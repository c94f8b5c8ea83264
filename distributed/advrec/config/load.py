"""From a YAML file and overrides to a validated `RunConfig`, and back to YAML; a bad file, key
or value is one `AdvrecError` line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from advrec import strict_yaml
from advrec.config.overrides import apply_overrides, key_text
from advrec.config.schema import RunConfig
from advrec.errors import AdvrecError, shown


def error_line(exc: ValidationError) -> str:
    """One line naming the first bad key: ``adv.eps: Input should be >= 0 (got -1)``, a list's
    entry by its index as the config errors name it (``adv.mix[0].lambda``, ``eval.eps[1]``);
    keys and values are echoed cut short (a value can be megabytes long)."""
    err = exc.errors()[0]
    # pydantic's loc holds a list index as an int (``("adv", "mix", 0, "lambda")``)
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{key_text(p)}"
                  for p in err["loc"]).removeprefix(".") or "config"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown config key"
    if err["type"] == "missing":
        return f"{loc}: required config key is missing"
    got = err.get("input")
    echo = "" if isinstance(got, dict) else f" (got {shown(got)})"
    return f"{loc}: {msg}{echo}"


def build_config(raw: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Validate a raw dict (plus overrides) into a RunConfig, or raise a one-line AdvrecError."""
    raw = apply_overrides(raw, overrides or [])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise AdvrecError(error_line(exc)) from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML config file (or none, for overrides only) and validate it."""
    return build_config(load_raw(path, overrides))


def load_raw(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config file (or none) with ``overrides`` applied, not yet validated."""
    raw = read_mapping(path, "config file") if path is not None else {}
    return apply_overrides(raw, overrides or [])


def read_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The YAML mapping in the file at ``path`` (a path or URL; empty: ``{}``), read by
    `advrec.strict_yaml`; a missing or unreadable file, bad or refused YAML or another kind of
    document is one error naming the file as a ``what``."""
    from advrec import io

    fs, p = io.filesystem(str(path))
    try:
        with fs.open(p, "rb") as f:
            data = f.read(strict_yaml.MAX_BYTES + 1)  # more is refused unread
    except FileNotFoundError:
        raise AdvrecError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise AdvrecError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise AdvrecError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    raw = strict_yaml.load(data, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise AdvrecError(f"{path}: a {what} must be a YAML mapping, not a {type(raw).__name__}")
    return raw


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (by alias, so ``adv.lambda`` round-trips)."""
    return strict_yaml.dump(cfg.model_dump(mode="json", by_alias=True))
