"""The typer app and the one rule every command follows: a FactoryError becomes
one red sentence on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import functools
from pathlib import Path

import typer
from rich.console import Console

from factory.errors import FactoryError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Synthetic LR/HR training pairs for super-resolution microscopy.")
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """factory: synthetic LR/HR pairs for super-resolution microscopy (see README.md)."""


def command(name: str | None = None, **kwargs):
    """Register a function as a CLI command with FactoryError -> one sentence, exit 2."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            try:
                return fn(*args, **kw)
            except FactoryError as exc:
                console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

        app.command(name, **kwargs)(wrapper)
        return fn

    return decorate


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked, and fail early on an unwritable folder."""
    if path.exists() and not overwrite:
        raise FactoryError(f"{path} already exists; pass --overwrite to replace it.")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise FactoryError(f"cannot write {path}: folder {parent} does not exist.")
    import os

    if not os.access(parent, os.W_OK):
        raise FactoryError(f"cannot write {path}: folder {parent} is not writable.")
