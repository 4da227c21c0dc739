"""validate, apply, status: the engine's commands."""

from __future__ import annotations

import json
from typing import Optional

import typer

from sriov_node.cli.app import (
    Interrupts,
    app,
    check_timeout,
    echo_problems,
    error_body,
    examples,
    fail,
    finish,
    open_root,
)
from sriov_node.errors import EXIT_PF_FAILED, SriovNodeError, UsageError

@app.command(epilog=examples("sriov-node validate", "sriov-node --config /tmp/new.toml validate --json"))
def validate(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text.")) -> None:
    """Check the config against its schema, this host's PFs and what their drivers can do.

    Exit 0 valid, 1 a block cannot apply here (or a step its PF's driver is known to refuse), 2 invalid.
    """
    from sriov_node.engine.reconcile import reconcile, unsupported
    from sriov_node.engine.survey import config_path, load_desired, survey

    host = open_root(ctx, as_json)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        resolution = survey(host, desired, vfs=False).resolution
        # the plans judged as apply judges them before its first write (a dry run: nothing written)
        planned = reconcile(host, desired, dry_run=True) if resolution.targets else None
    except SriovNodeError as exc:
        fail(exc, as_json)
    failures = list(resolution.failures)
    refused = [o for o in planned.outcomes if unsupported(o)] if planned is not None else []
    notices = list(planned.notices if planned is not None else resolution.notices)

    def text() -> None:
        for notice in notices:
            typer.echo(f"note: {notice}", err=True)
        for f in failures:
            typer.echo(f"error: {desired.source}: {f.render()}", err=True)
        for o in refused:
            for line in (o.error or "").splitlines():
                typer.echo(f"error: {desired.source}: {line}", err=True)
        problems = len(failures) + len(refused)
        verdict = "valid" if not problems else f"valid, but {problems} block problem(s) on this host"
        typer.echo(f"{desired.source}: {verdict}; {len(desired.pfs)} [[pf]] block(s) select "
                   f"{len(resolution.targets)} PF(s)")

    finish(EXIT_PF_FAILED if failures or refused else 0, as_json=as_json, text=text,
           body={"valid": not failures and not refused, "pfs": [t.pf.pci for t in resolution.targets],
                 "failures": [f.to_dict() for f in failures], "notices": notices,
                 "refused": [{"pf": o.pci, "block": o.key, "error": o.error, "refusals": (o.detail or {})["refusals"]}
                             for o in refused]})


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
    from sriov_node.views.progress import terminal_progress
    from sriov_node.engine.reconcile import config_path, load_desired

    from sriov_node import generations

    host = open_root(ctx, as_json)
    if detailed_exitcode and not dry_run:
        fail(UsageError("--detailed-exitcode goes with --dry-run"), as_json)
    if checkpoint is not None and dry_run:
        fail(UsageError("--checkpoint makes no sense with --dry-run"), as_json)
    gen = None
    with Interrupts() as interrupts:
        try:
            if dry_run:  # reads only: no lock; what apply would do, from the same generation
                now = generations.current(host)
                desired = load_desired(host, config_path(host, ctx.obj.config))
                change = generations.Change(host, desired, now, command="apply", record=False, force=force,
                                            timeout=timeout, cancelled=interrupts.cancelled)
                report = change.run(dry_run=True)
            else:
                with generations.locked(host, timeout, interrupts.cancelled) as now:
                    desired = load_desired(host, config_path(host, ctx.obj.config))  # read under the lock
                    if checkpoint is not None and now is None:
                        raise UsageError("--checkpoint: no applied generation to fall back to; run sriov-node "
                                         "apply first")
                    change = generations.Change(host, desired, now, command="apply", checkpoint_seconds=checkpoint,
                                                force=force, timeout=timeout, cancelled=interrupts.cancelled)
                    with terminal_progress(host, desired, as_json=as_json) as progress:
                        change.progress = progress
                        report = change.run()
                    gen = change.record()
        except SriovNodeError as exc:
            if detailed_exitcode:
                exc.exit_code = EXIT_PF_FAILED  # an invalid config is an error (1), not "changes pending" (2)
            fail(exc, as_json)
        # still inside the signal region: a signal from here until finish() decides the exit is
        # the report's "interrupted", never an exception between the run and its report
        unapplied = _file_not_applied(now, desired) if dry_run else None
        if unapplied:
            report.notices.append(unapplied)
        armed = generations.arm_expiry(host, gen, config=ctx.obj.config) if gen is not None and gen.pending else None
        body = report.to_dict()
        if dry_run:
            body = {"actions": body["actions"], "on_failure": body["on_failure"], "pfs": body["pfs"],
                    "result": body["result"]}  # what apply would answer (finish adds exit_code)
        else:
            body["generation"] = gen.number if gen else None
            body["checkpoint"] = dict(gen.checkpoint, expiry=armed) if gen is not None and gen.pending else None

        def text() -> None:
            _print_report(report, verbose)
            if gen is not None:
                typer.echo(f"generation {gen.number} ({gen.command}, {gen.outcome})" + (
                    f": checkpoint; run sriov-node commit within {checkpoint:g} s to keep it ({armed})" if armed else ""))

        code = _detailed_exit_code(report, bool(unapplied)) if detailed_exitcode else report.exit_code
        finish(code, as_json=as_json, body=body, text=text, notes=lambda: echo_problems(report.notices, report.outcomes))


def _file_not_applied(gen, desired) -> Optional[str]:
    """A dry run's note when the file is not the applied generation `gen` (apply would record it)."""
    import os

    if gen is not None and gen.sha256 == desired.digest:
        return None
    name = os.path.basename(desired.source)
    if gen is None:
        return f"no generation applied yet: sriov-node apply records {name} as generation 1"
    return f"{name} differs from the applied generation {gen.number}: sriov-node apply records it"


def _detailed_exit_code(report, unapplied: bool) -> int:
    """terraform plan's convention: 0 nothing to do, 2 changes pending, 1 an error; 3 apply would refuse."""
    from sriov_node.engine.outcome import PLANNED

    if report.exit_code:  # what apply would exit with: failed (1), refused (3)
        return report.exit_code
    return 2 if unapplied or any(o.status == PLANNED for o in report.outcomes) else 0


def _print_report(report, verbose: bool = False) -> None:
    from sriov_node.views.render import plan_lines

    if not report.outcomes:
        typer.echo("no PFs selected")
    width = max([len(o.name or "-") for o in report.outcomes] + [4])
    plans = {p.pf: p for p in report.plans}
    for o in report.outcomes:
        head = f"{o.pci or '-':<12}  {(o.name or '-'):<{width}}  {o.key:<6} {o.status:<11}"
        if report.dry_run and o.pci in plans and plans[o.pci].actions:
            plan = plans[o.pci]
            typer.echo(head + f" {len(plan.actions)} action(s)")
            for line in plan_lines(plan, verbose=verbose):
                typer.echo(line)
        else:
            typer.echo((head + (f" {o.writes} write(s)" if o.writes else "")).rstrip())
    if report.restoring:
        from sriov_node.engine.preimages import describe

        verb = "puts back" if report.dry_run else "put back"
        typer.echo(f"what sriov-node set and the config no longer manages, {verb} as it was found:")
        for pci, entry in sorted(report.restoring.items()):
            for line in describe(pci, entry):
                typer.echo(f"  {line}")


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
    import os

    from sriov_node.engine.state import load_state
    from sriov_node.views.status import build_status, generation_status
    from sriov_node.engine.survey import config_path, load_desired

    host = open_root(ctx, as_json)
    path = config_path(host, ctx.obj.config)
    problem: Optional[SriovNodeError] = None
    desired = None
    try:
        if ctx.obj.config is not None or os.path.exists(path):
            desired = load_desired(host, path)
    except SriovNodeError as exc:
        problem = exc  # show the host anyway, then the error
    applied, lines = generation_status(host, path)
    unreadable = "generation_error" in applied["body"]  # never judged against a guess (an older one, the file)
    body = build_status(host, None if unreadable else
                        applied["desired"] if applied["desired"] is not None else desired)
    if unreadable:
        body["converged"] = None
    body.update(applied["body"])
    _, unusable = load_state(host)
    if unusable:
        body["notices"].append(unusable)
    if problem is not None:
        body["error"] = error_body(problem)

    def text() -> None:
        _print_status(body, False, verbose)
        for line in lines:
            typer.echo(line)

    def errors() -> None:
        for line in str(problem or "").splitlines():
            typer.echo(f"error: {line}", err=True)

    if exit_code:
        overdue = bool((body.get("checkpoint") or {}).get("overdue"))  # a rollback is due and nobody ran it
        code = 0 if body["applied_generation"] is not None and body["converged"] is True \
            and body["config_differs"] is False and problem is None and not overdue else 1
    else:
        code = problem.exit_code if problem is not None else 0
    finish(code, as_json=as_json, body=body, text=text, notes=errors)


def _print_status(body, as_json: bool, verbose: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    from sriov_node.views.render import status_lines, use_colour

    for line in status_lines(body, verbose=verbose, colour=use_colour()):
        typer.echo(line)
    for notice in body["notices"]:
        typer.echo(f"note: {notice}", err=True)