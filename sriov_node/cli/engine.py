"""validate, apply, status: the engine's commands."""

from __future__ import annotations

import json
from typing import Optional

import typer

from sriov_node.cli.app import Interrupts, app, check_timeout, echo_problems, error_body, fail, open_root
from sriov_node.errors import EXIT_PF_FAILED, SriovNodeError

@app.command()
def validate(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the config against its schema and this host's PFs. Exit 0 valid, 1 a block cannot apply here, 2 invalid."""
    from sriov_node.survey import config_path, load_desired, survey

    host = open_root(ctx, as_json)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        _, resolution = survey(host, desired, vfs=False)
    except SriovNodeError as exc:
        fail(exc, as_json)
    failures = list(resolution.failures)
    if as_json:
        typer.echo(json.dumps({"valid": not failures, "pfs": [t.pf.pci for t in resolution.targets],
                               "failures": [f.to_dict() for f in failures], "notices": list(resolution.notices)},
                              indent=2))
    else:
        for notice in resolution.notices:
            typer.echo(f"note: {notice}", err=True)
        for f in failures:
            typer.echo(f"error: {desired.source}: {f.render()}", err=True)
        verdict = "valid" if not failures else f"valid, but {len(failures)} block problem(s) on this host"
        typer.echo(f"{desired.source}: {verdict}; {len(desired.pfs)} [[pf]] block(s) select "
                   f"{len(resolution.targets)} PF(s)")
    raise typer.Exit(EXIT_PF_FAILED if failures else 0)


@app.command()
def apply(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (and its clean-up); write nothing."),
    as_json: bool = typer.Option(False, "--json"),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use (may block until released)."),
    timeout: float = typer.Option(60.0, "--timeout", callback=check_timeout, help="Deadline in seconds for each wait (finite, > 0)."),
) -> None:
    """Converge the host to the config. Exit 0 converged, 1 a PF failed, 2 invalid config, 3 refused (VFs in use).

    SIGINT/SIGTERM stop between actions, run the plan's clean-up, and exit 130/143.
    """
    from sriov_node.progress import terminal_progress
    from sriov_node.reconcile import config_path, load_desired, reconcile

    host = open_root(ctx, as_json)
    with Interrupts() as interrupts:
        try:
            desired = load_desired(host, config_path(host, ctx.obj.config))
            with terminal_progress(host, None if dry_run else desired, as_json=as_json) as progress:
                report = reconcile(host, desired, dry_run=dry_run, force=force, timeout=timeout,
                                   cancelled=interrupts.cancelled, progress=progress)
        except SriovNodeError as exc:
            fail(exc, as_json)
    if as_json:
        body = report.to_dict()
        if dry_run:
            body = {"actions": body["actions"], "on_failure": body["on_failure"], "pfs": body["pfs"],
                    "result": body["result"], "exit_code": body["exit_code"]}  # what apply would answer
        typer.echo(json.dumps(body, indent=2))
    else:
        _print_report(report)
    echo_problems(report.notices, report.outcomes)
    raise interrupts.exit(report.exit_code)


def _print_report(report) -> None:
    if not report.outcomes:
        typer.echo("no PFs selected")
    width = max([len(o.name or "-") for o in report.outcomes] + [4])
    plans = {p.pf: p for p in report.plans}
    for o in report.outcomes:
        head = f"{o.pci or '-':<12}  {(o.name or '-'):<{width}}  {o.key:<6} {o.status:<11}"
        if report.dry_run and o.pci in plans and plans[o.pci].actions:
            plan = plans[o.pci]
            typer.echo(head + f" {len(plan.actions)} action(s)")
            for f in plan.findings:
                typer.echo(f"    differs: {f.describe()}")
            for phase, actions in plan.phases:
                for action in actions:
                    typer.echo(f"    [{phase}] {action.describe()}")
            for action in plan.on_failure:
                typer.echo(f"    [if it stops early] {action.describe()}")
        else:
            typer.echo((head + (f" {o.writes} write(s)" if o.writes else "")).rstrip())


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Per PF and VF: what the kernel shows, what the config wants, and every difference."""
    import os

    from sriov_node.survey import config_path, load_desired
    from sriov_node.status import build_status

    host = open_root(ctx, as_json)
    path = config_path(host, ctx.obj.config)
    problem: Optional[SriovNodeError] = None
    desired = None
    try:
        if ctx.obj.config is not None or os.path.exists(path):
            desired = load_desired(host, path)
    except SriovNodeError as exc:
        problem = exc  # show the host anyway, then the error
    body = build_status(host, desired)
    if problem is not None:
        body["error"] = error_body(problem)
    _print_status(body, as_json)
    if problem is not None:
        for line in str(problem).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(problem.exit_code)


def _print_status(body, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    if not body["pfs"]:
        typer.echo("no SR-IOV PFs found" + ("" if body["iommu_groups"] else "; the IOMMU is off"))
    for pf in body["pfs"]:
        mark = {None: "", True: "converged", False: "DIFFERS"}[pf["converged"]]
        if pf["error"]:
            mark = "NOT APPLIED"
        elif pf["converged"] and pf.get("unjudged"):
            mark = f"converged, {len(pf['unjudged'])} VF(s) not judged"
        extra = "".join(f"  {k} {pf[k]}" for k in ("mtu", "eswitch_mode") if pf[k] is not None and k != "mtu") \
            + (f"  mtu {pf['mtu']}" if pf["mtu"] not in (None, 1500) else "")
        typer.echo(f"{pf['pci']}  {pf['name'] or '-':<10} {pf['driver'] or 'no driver':<10} "
                   f"VFs {pf['num_vfs']}/{pf['total_vfs']}{extra}  {pf['block'] or ''}  {mark}".rstrip())
        for line in pf["pf_findings"]:
            typer.echo(f"    differs: {line}")
        if pf["error"]:
            typer.echo(f"    {pf['error']}")
        for vf in pf["vfs"]:
            if vf["matches"] is None:
                flag = vf["note"] or ""
            elif vf["matches"]:
                named = vf["driver"] if vf["driver"] in (vf.get("default_drivers") or ()) else None
                flag = f"ok ({vf['desired_driver']}" + (f", {named})" if named else ")")
            else:
                flag = "DIFFERS: " + "; ".join(vf["findings"])
            typer.echo(f"    vf{vf['index']:<4} {vf['pci']}  {vf['driver'] or '-':<10} {vf['netdev'] or '-':<14} {flag}".rstrip())
    shown = {pf["pci"] for pf in body["pfs"]}
    for block in body["blocks"]:
        if block["pf"] not in shown:
            typer.echo(f"{block['block']}: NOT APPLIED: {block['message']}")
    for notice in body["notices"]:
        typer.echo(f"note: {notice}", err=True)
    if body.get("reboot_required"):
        typer.echo(f"reboot required: {body['reboot_required']}")
    last = body.get("last_apply")
    if last:
        typer.echo(f"last apply: {last['time']}: {last['result']} ({last['writes']} write(s))")
