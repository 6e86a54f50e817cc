"""Dotted overrides of a study tree: `model.depth=56` -> tree["model"]["depth"] = 56.

Plain dict operations (no spec types), shared by the CLI's --set, profiles and Tune trials.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


class SpecError(ValueError):
    """A study spec that cannot run; the message names each bad field and what it allows."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and key != "space":
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def set_dotted(tree: dict[str, Any], path: str, value: Any) -> None:
    node = tree
    parts = path.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {path}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`model.depth=56` -> ("model.depth", 56); values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise SpecError(f"--set {text!r}: expected KEY=VALUE, e.g. model.depth=56")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_.\-]+)*", key):
        raise SpecError(f"--set {text!r}: '{key}' is not a dotted field name")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from exc
    return key, value


def apply_overrides(tree: dict[str, Any], overrides: Iterable[str | tuple[str, Any]]) -> dict:
    for item in overrides:
        key, value = parse_override(item) if isinstance(item, str) else item
        if key.startswith("search.space."):
            # search.space keys themselves contain dots: 'search.space.model.depth=[20, 32]'.
            tree.setdefault("search", {}).setdefault("space", {})[key[len("search.space.") :]] = (
                value
            )
        else:
            set_dotted(tree, key, value)
    return tree
