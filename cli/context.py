"""What the command modules share: the per-invocation Context (settings, registry) and plain-text tables."""

from __future__ import annotations

import click

from batcomputer.models.registry import Registry
from batcomputer.settings import Settings


class Context:
    """Settings and registry, built once per command from the environment."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.from_settings(self.settings)
        return self._registry


pass_context = click.make_pass_decorator(Context)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
