"""Read TOML with the standard library; write the subset we emit ([a.b] tables of key = value)."""
from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(doc: dict[str, Any]) -> str:
    """Serialise ``{section: {key: value-or-table}}``: scalars and lists as ``key = value``,
    nested dicts as ``[section.sub]`` tables (any depth); ``None`` values are left out."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = []
        for key, v in body.items():
            if isinstance(v, dict):
                nested.append((key, v))
            elif v is not None:
                lines.append(f"{key} = {_value(v)}")
        lines.append("")
        for key, v in nested:
            table(f"{name}.{key}", v)

    for section, body in doc.items():
        table(section, body)
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def parse_scalar(text: str) -> Any:
    """Parse an override value as TOML (``8``, ``1e-3``, ``true``, ``[64, 32]``); else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
