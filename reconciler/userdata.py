"""Reading YAML a user wrote (the inference ConfigMap) with hard bounds: pure.

Why: the reconciler parses text from a user's ConfigMap inside the pass that serves every
Workspace. Unbounded, one ConfigMap could stall or exhaust the pass: a billion-laughs alias
bomb (safe_load shares the aliased nodes, but dumping and hashing the result expands them),
thousands of nesting levels, or megabytes of text. This module refuses aliases and anchors
outright, caps the size before parsing and the depth before building Python objects, and
reports each refusal as a `UserDataError` that the pass turns into status.
Must not: read files, log, or return anything but plain dicts, lists and scalars.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 256 * 1024
MAX_DEPTH = 32


class UserDataError(ValueError):
    """The text is not acceptable YAML for us; the message states the rule broken."""


def _check_events(text: str, what: str, max_depth: int) -> None:
    """Walk the parser's events (no recursion): refuse anchors, aliases and deep nesting."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise UserDataError(f"{what}: YAML aliases are not allowed (line {line})")
        if getattr(event, "anchor", None) is not None:
            raise UserDataError(f"{what}: YAML anchors are not allowed (line {line})")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise UserDataError(f"{what} nests deeper than {max_depth} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def load_user_yaml(text: str, *, what: str, max_bytes: int = MAX_BYTES,
                   max_depth: int = MAX_DEPTH) -> Any:
    """One YAML document from `text`; UserDataError naming `what` and the limit it broke."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise UserDataError(f"{what} is {size} bytes; at most {max_bytes} are read")
    try:
        _check_events(text, what, max_depth)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserDataError(f"{what} is not valid YAML: {exc}") from exc
