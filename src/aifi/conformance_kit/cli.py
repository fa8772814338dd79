"""``aifi conformance performer|pacs|epd``: the conformance kit's commands, registered by
:mod:`aifi.cli`. Each command lives with its kit (``<kit>/command.py``) and returns through
:func:`aifi.conformance_kit.finish.finish` (report files, verdict, exit code).

The kits are loaded when their command runs (or its help is asked), not when ``aifi`` starts:
the performer kit imports the whole hub, which would add a second to every other command.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

KITS = ("performer", "pacs", "epd")


class _LazyKits(TyperGroup):
    """A command group whose commands are imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(KITS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        # (click types: typer ships its own click, whose names are private)
        if cmd_name not in KITS:
            return None
        module = importlib.import_module(f"aifi.conformance_kit.{cmd_name}.command")
        single = typer.Typer(add_completion=False)
        single.command(cmd_name)(getattr(module, cmd_name))
        return typer.main.get_command(single)


conformance_app = typer.Typer(
    cls=_LazyKits,
    help="The conformance kit: prove an AI product, a PACS or an EPD works with aifi-hub "
    "(report.json, report.html, junit.xml; exit code 0 only when every required case passes).",
    no_args_is_help=True,
)
