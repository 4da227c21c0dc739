"""validate, apply, status: the engine's commands (their bodies: sriov_node.cli.hot)."""

from __future__ import annotations

from typing import Optional

import typer

from sriov_node.cli.app import app, check_timeout, examples


@app.command(epilog=examples("sriov-node validate", "sriov-node --config /tmp/new.toml validate --json"))
def validate(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text.")) -> None:
    """Check the config against its schema, this host's PFs and what their drivers can do.

    Exit 0 valid, 1 a block cannot apply here (or a step its PF's driver is known to refuse), 2 invalid.
    """
    from sriov_node.cli import hot

    hot.validate(ctx.obj, as_json=as_json)


def _check_checkpoint(value: Optional[float]) -> Optional[float]:
    return None if value is None else check_timeout(value)


@app.command(epilog=examples("sriov-node apply --dry-run", "sriov-node apply --checkpoint 120 && sriov-node commit", "sriov-node apply --dry-run --detailed-exitcode; echo $?"))
def apply(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (and its clean-up); write nothing."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout (errors included)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="With --dry-run: one line per action, the clean-up in full."),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use (may block until released)."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout, help="Deadline in seconds for each wait (finite, > 0)."),
    checkpoint: Optional[float] = typer.Option(
        None, "--checkpoint", metavar="SECONDS", callback=_check_checkpoint,
        help="Converge, then restore the previous generation (file and host) unless sriov-node commit runs within SECONDS."),
    detailed_exitcode: bool = typer.Option(
        False, "--detailed-exitcode",
        help="With --dry-run: exit 0 nothing to do, 2 changes pending, 1 an error or a block that cannot apply, 3 would be refused."),
) -> None:
    """Converge the host to the config and record it as the applied generation (sriov-node history).

    Exit 0 converged, 1 a PF failed, 2 invalid config, 3 refused (VFs in use).
    SIGINT/SIGTERM stop between actions, run the plan's clean-up, and exit 130/143.
    """
    from sriov_node.cli import hot

    hot.apply(ctx.obj, dry_run=dry_run, as_json=as_json, verbose=verbose, force=force, timeout=timeout,
              checkpoint=checkpoint, detailed_exitcode=detailed_exitcode)


@app.command(epilog=examples("sriov-node status", "sriov-node status --verbose", "sriov-node status --exit-code || sriov-node status --json"))
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="The whole comparison as one JSON document."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="One line per VF (VFs alike are folded into ranges otherwise)."),
    exit_code: bool = typer.Option(False, "--exit-code",
                                   help="Exit 0 when the host is converged to the applied generation and the "
                                        "config file is that generation, else 1 (also while a checkpoint is "
                                        "overdue: its deadline passed and nothing restored it)."),
) -> None:
    """Per PF and VF: what the kernel shows, what the applied generation wants, and every difference.

    The host is compared with the applied generation (what the node converges to; sriov-node history),
    or with the config file before the first apply. A file edited but not applied is named.
    """
    from sriov_node.cli import hot

    hot.status(ctx.obj, as_json=as_json, verbose=verbose, exit_code=exit_code)
