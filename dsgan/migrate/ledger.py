"""Where every source key went: converted, ignored (with the reason) or not converted (unsupported).

Conversions record the key paths they read. At the end every leaf of the merged source config is looked up here
(itself, then its parents), so a key that no rule claimed shows up as unsupported instead of disappearing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dsgan.errors import ConfigError

Kind = Literal["converted", "ignored", "unsupported"]
MISSING = object()


@dataclass
class Ledger:
    entries: dict[str, tuple[Kind, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Differences in meaning (0.x vs 1.x vs dsgan) that apply to this config, and roundings."""
    defaults: list[str] = field(default_factory=list)
    """dsgan settings that do not come from the source."""

    def converted(self, path: str, became: str) -> None:
        """A conversion wins over an ignore/unsupported reason given for the same path (the first reason wins)."""
        self.entries[path] = ("converted", became)

    def ignored(self, path: str, reason: str) -> None:
        self.entries.setdefault(path, ("ignored", reason))

    def unsupported(self, path: str, reason: str) -> None:
        self.entries.setdefault(path, ("unsupported", reason))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def classify(self, path: str) -> tuple[Kind, str]:
        for candidate in parents(path):
            if candidate in self.entries:
                return self.entries[candidate]
        return ("unsupported", "not recognised: no dsgan equivalent is known")


@dataclass
class Ctx:
    """The merged source config being converted, and the ledger the conversion writes to."""

    source: Path
    values: dict[str, Any]
    version: str
    """'0.x' (MMGeneration) or '1.x' (MMGeneration 1.x / MMagic)."""
    ledger: Ledger = field(default_factory=Ledger)

    def get(self, path: str, default: Any = None) -> Any:
        value = lookup(self.values, path)
        return default if value is MISSING else value

    def has(self, path: str) -> bool:
        return lookup(self.values, path) is not MISSING

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: {message}")


def parents(path: str) -> Iterator[str]:
    """`a.b[0].c`, `a.b[0]`, `a.b`, `a`."""
    while path:
        yield path
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


def leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaf key paths; a list of scalars (betas, a mean) is one leaf, a list holding dicts is walked by index."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from leaves(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        for i, item in enumerate(value):
            yield from leaves(item, f"{prefix}[{i}]")
    else:
        yield prefix, value


def lookup(values: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (no list indices), or MISSING."""
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
