"""The typer app and the one rule every command follows: a FactoryError becomes
one red sentence on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from factory.errors import FactoryError
from factory.files import check_parent_writable

# rich_markup_mode=None: help text is plain, so units such as "[nm]" and typer's own "[default: 20]" survive.
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Synthetic training data for super-resolution microscopy: LR/HR pairs and SMLM frame stacks.")
console = Console(stderr=True, soft_wrap=True)  # never break a sentence or a command into lines: the terminal wraps


@app.callback()
def _root() -> None:
    """factory: synthetic LR/HR pairs for super-resolution microscopy (see README.md)."""


def command(name: str | None = None, group: typer.Typer | None = None, **kwargs):
    """Register a function as a CLI command (on ``group``, a sub-app such as ``factory care``, else the top
    level) with the one rule: FactoryError -> one sentence, exit 2."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except FactoryError as exc:
                console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
                if getattr(exc, "hard_exit", False):  # e.g. a Ray cluster that never answered: do not wait for its threads
                    console.file.flush()
                    os._exit(2)
                raise typer.Exit(2) from None

        (group or app).command(name, **kwargs)(wrapper)
        return fn

    return decorate


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked, and fail early on an unwritable folder."""
    if path.exists() and not overwrite:
        raise FactoryError(f"{path} already exists; pass --overwrite to replace it.")
    check_parent_writable(path)
