"""What every command shares: errors, JSON, the host, signals, output; and the typer application.

Importing this module does not import typer: the hot commands (validate, apply, status, boot, daemon) run
through `sriov_node.cli.hot` without it. The typer application (`app`, `sim_app`) is built on first
use (`from sriov_node.cli.app import app`), by the command modules and for --help and completion.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from typing import Any, Callable, Dict, Iterable, NoReturn, Optional

from sriov_node.cli import signals
from sriov_node.errors import ConfigError, HostError, SriovNodeError, UsageError


class Exit(Exception):
    """The end of a command with its exit code (typer's Exit without typer: sriov_node.cli returns the code)."""

    def __init__(self, code: int = 0) -> None:
        super().__init__(code)
        self.exit_code = code


DOCUMENT = [False]  # --json: stdout's first write is the decision point (see sriov_node.cli._decide_at_the_document)
_ANSI = "\x1b"


def echo(message: Optional[str] = None, err: bool = False, nl: bool = True) -> None:
    """A line on stdout (or stderr), as typer.echo writes it: flushed at once, terminal escape
    sequences stripped when the stream is not a terminal."""
    if not err and DOCUMENT[0] and not signals.settled():
        signum = signals.settle()
        if signum is not None and not signals.taken():
            raise signals.Interrupted(signum)
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    out = "" if message is None else str(message)
    if nl:
        out += "\n"
    if not out:
        stream.flush()
        return
    if _ANSI in out and not _isatty(stream):
        import re

        out = re.sub(r"\033\[[;?0-9]*[a-zA-Z]", "", out)
    if (getattr(stream, "encoding", None) or "").lower() in ("ascii", "us-ascii", "ansi_x3.4-1968") \
            and hasattr(stream, "buffer"):  # as click: a stream misconfigured for ASCII gets UTF-8
        stream.flush()
        stream.buffer.write(out.encode("utf-8", "replace"))
        stream.buffer.flush()
        return
    stream.write(out)
    stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def __getattr__(name: str) -> Any:
    """`app` and `sim_app`: the typer application, built (and typer imported) on first use."""
    if name in ("app", "sim_app"):
        _build()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build() -> None:
    global typer, app, sim_app
    import typer

    app = typer.Typer(
        add_completion=True,  # typer's own: --install-completion / --show-completion
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        help="Provision SR-IOV Virtual Functions from /etc/sriov-node/config.toml.",
    )
    sim_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Simulated hosts for tests and demos.")
    app.add_typer(sim_app, name="sim")

    def _global(
        ctx: typer.Context,
        root: str = typer.Option("/", "--root", metavar="DIR", envvar="SRIOV_NODE_ROOT", help="Root prefix for /sys, /proc, /dev, /run, /var/lib, /etc."),
        config: Optional[str] = typer.Option(None, "--config", metavar="PATH", envvar="SRIOV_NODE_CONFIG", help="Desired state [default: ROOT/etc/sriov-node/config.toml]."),
        version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="Print the version and exit."),
    ) -> None:
        ctx.obj = Options(root=root, config=config)

    app.callback()(_global)


def examples(*lines: str) -> str:
    """A command's --help epilog: two or three command lines to start from (kept as written)."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


def complete_pf(ctx: typer.Context, incomplete: str) -> "list[str]":
    """Shell completion for a PF argument: this host's PF interface names and PCI addresses."""
    from sriov_node.cli.root import open_root
    from sriov_node.host.observe import observe

    root = (ctx.find_root().params.get("root") if ctx else None) or os.environ.get("SRIOV_NODE_ROOT", "/")
    try:
        pfs = observe(open_root(root), vfs_of=()).pfs
    except (OSError, ValueError):
        return []
    words = [w for pf in pfs for w in (*pf.netdevs, pf.pci)]
    return [w for w in words if w.startswith(incomplete)]


class Options:
    """The global options: --root and --config (ctx.obj under typer)."""

    __slots__ = ("root", "config")

    def __init__(self, root: str, config: Optional[str]) -> None:
        self.root = root
        self.config = config

    def __repr__(self) -> str:
        return f"Options(root={self.root!r}, config={self.config!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Options) and (self.root, self.config) == (other.root, other.config)


def error_body(exc: SriovNodeError) -> Dict[str, Any]:
    body: Dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    if isinstance(exc, ConfigError):
        body["problems"] = [{"key": p.key, "message": p.message} for p in exc.problems]
    if isinstance(exc, HostError):
        body.update(exc.to_dict())
    return body


def fail(exc: SriovNodeError, as_json: bool) -> NoReturn:
    """Print the error (one JSON document on stdout with --json; sentences on stderr always) and exit.

    The decision point of an error's report (signals.settle): a signal received before it makes
    the exit 128 + the signal, and the document says so.
    """
    body = error_body(exc)
    code = exc.exit_code
    signum = signals.settle()
    if signum is not None:
        code = body["exit_code"] = 128 + signum
        body["interrupted"] = signals.name(signum)
    if as_json:
        echo(json.dumps({"error": body}, indent=2))
    for line in str(exc).splitlines():
        echo(f"error: {line}", err=True)
    if signum is not None:
        echo(f"sriov-node: stopped by {signals.name(signum)}", err=True)
    raise Exit(code)


def finish(code: int, *, as_json: bool, body: Optional[Dict[str, Any]] = None,
           text: Optional[Callable[[], None]] = None, notes: Optional[Callable[[], None]] = None) -> NoReturn:
    """The one decision point of a command's answer: its report (`body` as one JSON document with
    --json, else `text()`; then `notes()`, on stderr, either way) and its exit, decided together.

    signals.settle() first: a SIGINT/SIGTERM received before this moment makes the exit 128 + the
    signal and the report say so ("interrupted": true, "signal", "result": "interrupted", and
    `exit_code`, always the process's); one received after it changes nothing (it is blocked).
    """
    signum = signals.settle()
    if signum is not None:
        code = 128 + signum
    if body is not None:
        if signum is not None:
            body["interrupted"] = True
            body["signal"] = signals.name(signum)
            if "result" in body:
                body["result"] = "interrupted"
        body["exit_code"] = code
    if as_json:
        echo(json.dumps(body, indent=2))
    elif text is not None:
        text()
    if notes is not None:
        notes()
    if signum is not None and not signals.taken():
        echo(f"sriov-node: {signals.name(signum)} received after the work was done: "
                   f"exit {code} (the report above is complete)", err=True)
    raise Exit(code)


def open_root(ctx: Any, as_json: bool = False):
    """The host at --root (`ctx`: typer's context, or the Options themselves)."""
    from sriov_node.cli.root import open_root as open_at

    opts = getattr(ctx, "obj", ctx)
    if not os.path.isdir(opts.root):
        fail(UsageError(f"--root {opts.root}: no such directory"), as_json)
    return open_at(opts.root)


def echo_problems(notices: Iterable[str], outcomes: Iterable[Any]) -> None:
    """A run's notices, then each outcome's error lines, on stderr."""
    for notice in notices:
        echo(f"note: {notice}", err=True)
    for outcome in outcomes:
        for line in (outcome.error or "").splitlines():
            echo(f"error: {line}", err=True)


def valid_timeout(value: float) -> bool:
    return math.isfinite(value) and value > 0


def check_timeout(value: float) -> float:
    if not valid_timeout(value):
        import typer

        raise typer.BadParameter(f"must be a finite number of seconds above 0, not {value}")
    return value


class Interrupts:
    """SIGINT/SIGTERM during a run: note it, let the engine stop between actions; a second one stops at once.

    (A thin face on sriov_node.cli.signals, whose handlers main installs first of all; installed
    here too when the app runs without main, as under typer's test runner.)
    """

    def __init__(self) -> None:
        self._old: Dict[int, Any] = {}
        self._region: Any = None

    def cancelled(self) -> bool:
        return signals.cancelled()

    @property
    def signum(self) -> Optional[int]:
        return signals.received()

    def decide(self, code: int) -> int:
        """The run's exit, decided once before its report (signals.settle): 128 + the signal when one
        came before this moment, else `code`. Put it in the report, then raise typer.Exit with it."""
        signum = signals.settle()
        return 128 + signum if signum is not None else code

    def exit(self, code: int) -> Exit:
        """The exit to raise at the end of a run (see decide: call that before printing the report)."""
        return Exit(self.decide(code))

    def __enter__(self) -> "Interrupts":
        for sig in signals.SIGNALS:
            if signal.getsignal(sig) is not signals._handle:
                self._old[sig] = signal.signal(sig, signals._handle)
        self._region = signals.deferred()
        self._region.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._region.__exit__(*exc)
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _version(value: bool) -> None:
    if value:
        from sriov_node import __version__

        import typer

        typer.echo(f"sriov-node {__version__}")
        raise typer.Exit(0)
