"""Command line: argument parsing, exit codes, text or --json output. No logic of its own.

One module per group of commands; importing a module registers its commands on the one typer
app. A run that names its command loads that command's module alone (typer builds the parser of
every registered command at each start: fewer is faster on the boot path); help, completion
and anything unrecognised load them all.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import List, Optional

import typer

from sriov_node.cli.app import app
from sriov_node.errors import EXIT_INVALID

MODULES = ("engine", "check", "service", "cluster", "day2", "sim")
COMMANDS = {
    "validate": "engine", "apply": "engine", "status": "engine", "check": "check",
    "boot": "service", "daemon": "service", "udev-rule": "service",
    "set": "cluster", "unset": "cluster", "capture": "cluster", "export": "cluster", "metrics": "cluster",
    "history": "day2", "commit": "day2", "rollback": "day2",
    "sim": "sim",
}
GLOBAL_OPTIONS_WITH_VALUE = ("--root", "--config")


def command_of(argv: List[str]) -> Optional[str]:
    """The command word of a command line, past the global options; None if there is none."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in GLOBAL_OPTIONS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            return arg
        elif arg in ("--help", "-h") or "=" not in arg and not arg.startswith(GLOBAL_OPTIONS_WITH_VALUE):
            return None
    return None


def register(argv: List[str]) -> None:
    """Import the module of the command `argv` names, or every module."""
    wanted = COMMANDS.get(command_of(argv) or "")
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    for name in MODULES if wanted is None or completing else (wanted,):
        importlib.import_module(f"sriov_node.cli.{name}")

# click's UsageError (typer vendors click from 0.28 on; earlier versions import it): BadParameter's base
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
    register(sys.argv[1:])
    try:
        code = app(standalone_mode=False)
    except _UsageError as exc:  # bad options: JSON too when --json was asked for
        if "--json" in sys.argv:
            print(json.dumps({"error": {"type": "UsageError", "message": exc.format_message(),
                                        "exit_code": EXIT_INVALID}}, indent=2))
        exc.show()
        sys.exit(EXIT_INVALID)
    except typer.Abort:
        sys.exit(130)
    except BrokenPipeError:  # e.g. `sriov-node status | head`
        sys.exit(0)
    sys.exit(code if isinstance(code, int) else 0)
