"""YAML as advrec reads every document a user hands it (run configs, ``key=value`` overrides,
job specs, a run's ``config.yaml``): PyYAML's safe loader, made strict where YAML invites trouble.

- No aliases: ``*a`` repeats a whole node, so a few hundred bytes of nested aliases expand into
  gigabytes once anything walks the values (validation, an error echoing them, a search space).
- No repeated key: YAML would silently keep the last of two ``adv:`` sections.
- At most `MAX_BYTES` and `MAX_DEPTH` levels of nesting: PyYAML builds every node in Python (a
  megabyte of ``[1,1,...]`` takes tens of seconds) and composes nested ones by recursion.

Every refusal is one `AdvrecError` line naming the document and the line and column.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from advrec.errors import AdvrecError, shown

MAX_BYTES = 64 * 1024
"""The largest YAML document read (the shipped configs are 1-2 KiB)."""
MAX_DEPTH = 32
"""The deepest nesting of mappings and lists read (a run config nests 4 deep)."""
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that advrec refuses (an alias, a repeated key, deep nesting)."""


class _Loader(yaml.SafeLoader):
    """`yaml.SafeLoader` without aliases, repeated keys or deep nesting (see the module)."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(problem=f"alias *{event.anchor}: aliases are refused (a few bytes of "
                           "them expand into gigabytes); write the value out",
                           problem_mark=event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise _Refused(problem=f"nested deeper than {MAX_DEPTH} levels",
                           problem_mark=self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the safe constructor reports it
                continue
            if repeated:
                raise _Refused(problem=f"key {shown(key)} is repeated (YAML would silently keep "
                               "only the last)", problem_mark=key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ValueError as exc:  # an integer of 5000 digits, a 13th month, ...
            raise ConstructorError(problem=str(exc), problem_mark=node.start_mark) from None


class _Dumper(yaml.SafeDumper):
    """`yaml.SafeDumper` that writes a value shared by two keys out twice, never as an alias
    (which `load` refuses)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def load(data: str | bytes, source: str) -> Any:
    """The YAML document in ``data`` (bytes: UTF-8 or UTF-16 with a BOM), strictly (see the
    module); any problem is one `AdvrecError` line that starts with ``source``."""
    if len(data) > MAX_BYTES:
        raise AdvrecError(f"{source}: more than {MAX_BYTES // 1024} KiB of YAML; a config is "
                          "a few KiB")
    try:
        return yaml.load(data, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except _Refused as exc:
        raise AdvrecError(f"{source}{_where(exc)}: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # not text: bad UTF-8, control characters
        what = (f"character U+{exc.character:04X}" if exc.encoding == "unicode"
                else f"not {exc.encoding}: byte 0x{exc.character:02x}")
        raise AdvrecError(f"{source}: not YAML text ({what} at position {exc.position}: "
                          f"{exc.reason})") from None
    except yaml.MarkedYAMLError as exc:
        problem = textwrap.shorten(str(exc.problem), 200, placeholder=" ...")
        raise AdvrecError(f"{source}: not valid YAML{_where(exc)}: {problem}") from None
    except yaml.YAMLError as exc:
        raise AdvrecError(f"{source}: not valid YAML ({textwrap.shorten(str(exc), 200)})") from None


def dump(data: Any) -> str:
    """``data`` as block-style YAML, keys in their order, without aliases."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)
