"""The typer application, global options, and what every command shares: errors, JSON, the host, signals."""

from __future__ import annotations

import json
import math
import os
import signal
from dataclasses import dataclass
from typing import Any, Dict, Iterable, NoReturn, Optional

import typer

from sriov_node.errors import ConfigError, HostError, SriovNodeError, UsageError

app = typer.Typer(
    add_completion=True,  # typer's own: --install-completion / --show-completion
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Provision SR-IOV Virtual Functions from /etc/sriov-node/config.toml.",
)
sim_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Simulated hosts for tests and demos.")
app.add_typer(sim_app, name="sim")


def complete_pf(ctx: typer.Context, incomplete: str) -> "list[str]":
    """Shell completion for a PF argument: this host's PF interface names and PCI addresses."""
    from sriov_node.host import open_host
    from sriov_node.host.observe import observe

    root = (ctx.find_root().params.get("root") if ctx else None) or os.environ.get("SRIOV_NODE_ROOT", "/")
    try:
        pfs = observe(open_host(root), vfs_of=()).pfs
    except (OSError, ValueError):
        return []
    words = [w for pf in pfs for w in (*pf.netdevs, pf.pci)]
    return [w for w in words if w.startswith(incomplete)]


@dataclass
class Options:
    root: str
    config: Optional[str]


def error_body(exc: SriovNodeError) -> Dict[str, Any]:
    body: Dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    if isinstance(exc, ConfigError):
        body["problems"] = [{"key": p.key, "message": p.message} for p in exc.problems]
    if isinstance(exc, HostError):
        body.update(exc.to_dict())
    return body


def fail(exc: SriovNodeError, as_json: bool) -> NoReturn:
    """Print the error (one JSON document on stdout with --json; sentences on stderr always) and exit."""
    if as_json:
        typer.echo(json.dumps({"error": error_body(exc)}, indent=2))
    for line in str(exc).splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(exc.exit_code)


def open_root(ctx: typer.Context, as_json: bool = False):
    import os

    from sriov_node.host import open_host

    if not os.path.isdir(ctx.obj.root):
        fail(UsageError(f"--root {ctx.obj.root}: no such directory"), as_json)
    return open_host(ctx.obj.root)


def echo_problems(notices: Iterable[str], outcomes: Iterable[Any]) -> None:
    """A run's notices, then each outcome's error lines, on stderr."""
    for notice in notices:
        typer.echo(f"note: {notice}", err=True)
    for outcome in outcomes:
        for line in (outcome.error or "").splitlines():
            typer.echo(f"error: {line}", err=True)


def check_timeout(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"must be a finite number of seconds above 0, not {value}")
    return value


class Interrupts:
    """SIGINT/SIGTERM during a run: note it, let the engine stop between actions; a second one kills."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        typer.echo(f"sriov-node: {signal.Signals(signum).name}: stopping after the current action "
                   "(again to stop at once)", err=True)
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def cancelled(self) -> bool:
        return self.signum is not None

    def exit(self, code: int) -> "typer.Exit":
        """The exit to raise at the end of a run: 128 + the signal when one stopped it, else `code`."""
        return typer.Exit(128 + self.signum if self.signum is not None else code)

    def __enter__(self) -> "Interrupts":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _version(value: bool) -> None:
    if value:
        from sriov_node import __version__

        typer.echo(f"sriov-node {__version__}")
        raise typer.Exit(0)


@app.callback()
def _global(
    ctx: typer.Context,
    root: str = typer.Option("/", "--root", envvar="SRIOV_NODE_ROOT", help="Root prefix for /sys, /proc, /dev, /run, /var/lib, /etc."),
    config: Optional[str] = typer.Option(None, "--config", envvar="SRIOV_NODE_CONFIG", help="Desired state [default: ROOT/etc/sriov-node/config.toml]."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version, help="Print the version and exit."),
) -> None:
    ctx.obj = Options(root=root, config=config)
