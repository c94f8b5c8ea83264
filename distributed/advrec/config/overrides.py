"""``key=value`` overrides of a raw (not yet validated) config: dotted keys, values parsed as
YAML by `advrec.strict_yaml`, the raw dict never changed in place."""

from __future__ import annotations

from typing import Any

from advrec import strict_yaml
from advrec.errors import AdvrecError, shown


def _parse_value(text: str, culprit: str) -> Any:
    """Parse an override's value as YAML, so `0.5`, `true`, `[10,20]` and `null` get their types."""
    return strict_yaml.load(text, culprit) if text != "" else ""


def key_text(key: Any) -> str:
    """A config key as an error names it: as written, or quoted and cut when it is long or
    holds a newline or another unprintable character."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 60 else shown(key)


def _with_value(raw: dict[str, Any], key: str, value: Any, culprit: str) -> dict[str, Any]:
    """``raw`` with the dotted ``key`` set to ``value``: a new dict, whose sections on the key's
    path are new too (``raw`` is left as it was)."""
    parts = key.split(".")
    if not all(parts):
        raise AdvrecError(f"{culprit}: a key is names joined by dots, e.g. adv.eps")
    out = node = dict(raw)
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            raise AdvrecError(f"{culprit}: {key_text(part)} is not a section")
        node[part] = dict(child)
        node = node[part]
    node[parts[-1]] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (returns a new dict)."""
    out = raw
    for item in overrides:
        key, sep, value = item.partition("=")
        culprit = f"override {shown(item)}"
        if not sep or not key:
            raise AdvrecError(f"{culprit}: expected key=value, e.g. adv.eps=0.5")
        out = _with_value(out, key, _parse_value(value, culprit), culprit)
    return dict(out)


def with_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with each dotted key of ``values`` set to its value (returns a new dict)."""
    out = dict(raw)
    for key, value in values.items():
        out = _with_value(out, key, value, key_text(key))
    return out
