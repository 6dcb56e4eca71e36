"""Key documentation generated from the schema's ``doc=`` metadata (docs/study.md tables,
``finscale config show --keys``)."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import fields
from typing import Any

from finscale.config.loading import _is_section, _type_name
from finscale.config.schema import StudyConfig


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, doc) rows for documentation and `config show --keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        tp = hints[f.name]
        if _is_section(tp):
            rows += describe_fields(tp, f"{prefix}{f.name}.")
            continue
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else dataclasses.MISSING)
        rows.append((prefix + f.name, _type_name(tp) if not isinstance(tp, (types.GenericAlias, types.UnionType))
                     else str(tp), default, f.metadata.get("doc", "")))
    return rows


# --------------------------------------------------------------------------- key docs

KEYS_BEGIN = "<!-- keys {section}: generated from the doc= of finscale/config/schema.py; do not edit -->"
KEYS_END = "<!-- /keys -->"


def toml_literal(value: Any) -> str:
    """A default as it is written in a study file (``"a20"``, ``false``, ``[1, 2]``, ``{}``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def key_table(section: str) -> str:
    """The Markdown key table of one study section ("" = top level), from field metadata."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, _tp, default, doc in describe_fields(StudyConfig):
        where, _, name = key.rpartition(".")
        if where == section:
            lines.append(f"| `{name}` | `{toml_literal(default)}` | {doc} |")
    return "\n".join(lines)


def render_key_docs(text: str) -> str:
    """``text`` with every generated key table (between KEYS_BEGIN/KEYS_END) rebuilt."""
    out, pos = [], 0
    pattern = re.compile(r"<!-- keys (\S*): generated[^\n]*-->\n.*?<!-- /keys -->", re.S)
    for match in pattern.finditer(text):
        section = "" if match.group(1) == "top" else match.group(1)
        out += [text[pos:match.start()], KEYS_BEGIN.format(section=match.group(1)), "\n",
                key_table(section), "\n", KEYS_END]
        pos = match.end()
    return "".join(out) + text[pos:]
