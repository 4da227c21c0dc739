"""Command line: argument parsing, exit codes, text or --json output. No logic of its own.

One module per group of commands; each registers itself on the one typer app.
"""

from __future__ import annotations

import json
import sys

import typer

from sriov_node.cli import check, cluster, engine, service, sim
from sriov_node.cli.app import app
from sriov_node.errors import EXIT_INVALID

COMMANDS = (engine, check, service, cluster, sim)  # importing each module registers its commands

# click's UsageError (typer vendors click from 0.28 on; earlier versions import it): BadParameter's base
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def main() -> None:
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
