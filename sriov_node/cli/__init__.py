"""Command line: argument parsing, exit codes, text or --json output. No logic of its own.

One module per group of commands; importing a module registers its commands on the one typer
app. A run that names its command loads that command's module alone (typer builds the parser of
every registered command at each start: fewer is faster on the boot path); help, completion
and anything unrecognised load them all.

The hot commands (validate, apply, status, boot, daemon) do without typer when their command line is one
`sriov_node.cli.hot.parse` understands completely; anything else (help, completion, a bad option)
is typer's, as before.

`main` catches SIGINT/SIGTERM before it imports anything heavy (sriov_node.cli.signals): a
signal at any moment gets one answer (one JSON document with --json, a sentence otherwise, never
a traceback) and an exit of 128 + the signal. This module imports only the standard library at
the top, so that the console script reaches `main` at once.
"""

from __future__ import annotations

import os
import sys

# (annotations below are never evaluated: builtin generics, and no `typing` import on the way to main)

MODULES = ("converge", "check", "service", "cluster", "day2", "sim")
COMMANDS = {
    "validate": "converge", "apply": "converge", "status": "converge", "check": "check",
    "boot": "service", "daemon": "service", "udev-rule": "service",
    "set": "cluster", "unset": "cluster", "capture": "cluster", "export": "cluster", "metrics": "cluster",
    "history": "day2", "commit": "day2", "rollback": "day2",
    "sim": "sim",
}
GLOBAL_OPTIONS_WITH_VALUE = ("--root", "--config")
JSON_FLAGS = ("--json", "--json-only")  # the options that make a command answer in JSON (errors too)


def command_of(argv: list[str]) -> str | None:
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


def register(argv: list[str]) -> None:
    """Import the module of the command `argv` names, or every module."""
    import importlib

    wanted = COMMANDS.get(command_of(argv) or "")
    completing = any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)
    for name in MODULES if wanted is None or completing else (wanted,):
        importlib.import_module(f"sriov_node.cli.{name}")


def main() -> None:
    from sriov_node.cli import signals

    signals.install()  # first of all: from here on a signal gets an answer, not a traceback
    as_json = any(flag in sys.argv[1:] for flag in JSON_FLAGS)
    try:
        code = _run(sys.argv[1:], as_json)
        decided = signals.settled()
        signum = signals.settle()
        if signum is not None and not decided and not signals.taken():  # came as the command ended
            raise signals.Interrupted(signum)
    except signals.Interrupted as exc:
        code = _interrupted(exc, as_json)
    except Exception as exc:
        # Python wraps what a signal raised inside some of its own machinery (a class body's
        # __set_name__ during an import becomes a RuntimeError): still the signal's answer
        inner = signals.wrapped(exc)
        if inner is None:
            raise
        code = _interrupted(inner, as_json)
    sys.exit(code)


def _run(argv: list[str], as_json: bool) -> int:
    from sriov_node.cli import hot

    call = hot.parse(argv)
    if call is None:
        return _run_typer(argv, as_json)
    from sriov_node.cli.app import DOCUMENT

    DOCUMENT[0] = as_json
    return hot.run(*call)


def _run_typer(argv: list[str], as_json: bool) -> int:
    import json

    import typer

    from sriov_node.cli import signals
    from sriov_node.cli.app import Exit, app
    from sriov_node.errors import EXIT_INVALID

    register(argv)
    if as_json:
        _decide_at_the_document(typer, signals)
    # click's UsageError (typer vendors click from 0.28 on; earlier versions import it): BadParameter's base
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:  # bad options: JSON too when --json was asked for
        signum = signals.settle()
        if signum is not None:
            raise signals.Interrupted(signum)
        if as_json:
            print(json.dumps({"error": {"type": "UsageError", "message": exc.format_message(),
                                        "exit_code": EXIT_INVALID}}, indent=2))
        exc.show()
        return EXIT_INVALID
    except Exit as exc:  # the end of a command whose body is typer's and ours (sriov_node.cli.hot)
        return exc.exit_code
    except typer.Abort:
        return 130
    except BrokenPipeError:  # e.g. `sriov-node status | head`
        return 0
    return code if isinstance(code, int) else 0


def _decide_at_the_document(typer, signals) -> None:
    """With --json, stdout gets one document, at the end: its first write is the decision point of
    every command (signals.settle), for those that did not decide themselves (app.finish does).

    A signal received before it and not handled by a run replaces the document by main's
    "interrupted" one; after it, no signal can cut the document or add a second one.
    """
    from sriov_node.cli.app import DOCUMENT

    DOCUMENT[0] = True  # the same for the commands' own echo (sriov_node.cli.app.echo)
    echo = typer.echo

    def echo_once_decided(message=None, file=None, nl=True, err=False, color=None):
        if not err and file is None and not signals.settled():
            signum = signals.settle()
            if signum is not None and not signals.taken():
                raise signals.Interrupted(signum)
        return echo(message, file=file, nl=nl, err=err, color=color)

    typer.echo = echo_once_decided


def _interrupted(exc: "BaseException", as_json: bool) -> int:
    """The one report of a run a signal stopped outside the engine (or a second signal at once)."""
    import json

    from sriov_node.cli import signals

    signals.settle()
    assert isinstance(exc, signals.Interrupted)
    signum = signals.received() or exc.signum
    code = 128 + signum
    if as_json:
        body = {"error": {"type": "Interrupted", "message": exc.message, "signal": signals.name(signum),
                          "interrupted": signals.name(signum), "exit_code": code}}
        _write(1, json.dumps(body, indent=2) + "\n")
    _write(2, f"sriov-node: {exc.message}\n")
    return code


def _write(fd: int, text: str) -> None:
    """Straight to the file descriptor, after whatever Python had buffered there."""
    stream = sys.stdout if fd == 1 else sys.stderr
    try:
        if stream is not None:
            stream.flush()
        os.write(fd, text.encode())
    except (OSError, ValueError):
        pass
