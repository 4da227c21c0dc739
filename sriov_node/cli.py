"""Command line: argument parsing, exit codes, text or --json output. No logic of its own."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any, List, NoReturn, Optional

import typer

from sriov_node.errors import EXIT_INVALID, ConfigError, SriovNodeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Provision SR-IOV Virtual Functions from /etc/sriov-node/config.toml.",
)
sim_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Simulated hosts for tests and demos.")
app.add_typer(sim_app, name="sim")


@dataclass
class Options:
    root: str
    config: Optional[str]


def _fail(exc: SriovNodeError, as_json: bool) -> NoReturn:
    if as_json:
        body: Any = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, ConfigError):
            body["problems"] = [{"key": p.key, "message": p.message} for p in exc.problems]
        typer.echo(json.dumps(body, indent=2))
    for line in str(exc).splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(exc.exit_code)


def _host(ctx: typer.Context):
    import os

    from sriov_node.host import Host

    if not os.path.isdir(ctx.obj.root):
        typer.echo(f"error: --root {ctx.obj.root}: no such directory", err=True)
        raise typer.Exit(EXIT_INVALID)
    return Host(ctx.obj.root)


@app.callback()
def _global(
    ctx: typer.Context,
    root: str = typer.Option("/", "--root", envvar="SRIOV_NODE_ROOT", help="Root prefix for /sys, /proc, /dev, /run, /var/lib, /etc."),
    config: Optional[str] = typer.Option(None, "--config", envvar="SRIOV_NODE_CONFIG", help="Desired state [default: ROOT/etc/sriov-node/config.toml]."),
) -> None:
    ctx.obj = Options(root=root, config=config)


@app.command()
def validate(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the config against its schema and this host's PFs. Exit 0 valid, 2 invalid."""
    from sriov_node.apply import config_path, load_desired, make_plan

    host = _host(ctx)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        the_plan, notices = make_plan(host, desired)
    except SriovNodeError as exc:
        _fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({"valid": True, "pfs": [p.pf for p in the_plan.pfs], "notices": notices}, indent=2))
        return
    for notice in notices:
        typer.echo(f"note: {notice}", err=True)
    typer.echo(f"{desired.source}: valid; {len(desired.pfs)} [[pf]] block(s) select {len(the_plan.pfs)} PF(s)")


@app.command()
def apply(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; write nothing."),
    as_json: bool = typer.Option(False, "--json"),
    force: bool = typer.Option(False, "--force", help="Disable VFs even while in use (may block until released)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.0, help="Deadline in seconds for each wait."),
) -> None:
    """Converge the host to the config. Exit 0 converged, 1 a PF failed, 2 invalid config, 3 refused."""
    from sriov_node.apply import config_path, load_desired, run_apply

    host = _host(ctx)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        report = run_apply(host, desired, dry_run=dry_run, force=force, timeout=timeout)
    except SriovNodeError as exc:
        _fail(exc, as_json)
    if as_json:
        body = report.to_dict()
        typer.echo(json.dumps({"actions": body["actions"]} if dry_run else body, indent=2))
    else:
        _print_report(report)
    for notice in report.notices:
        typer.echo(f"note: {notice}", err=True)
    for outcome in report.outcomes:
        if outcome.error:
            typer.echo(f"error: {outcome.error}", err=True)
    raise typer.Exit(0 if dry_run else report.exit_code)


def _print_report(report) -> None:
    if not report.outcomes:
        typer.echo("no PFs selected")
    width = max([len(o.name or "-") for o in report.outcomes] + [4])
    for o in report.outcomes:
        head = f"{o.pci}  {(o.name or '-'):<{width}}  {o.status:<9}"
        if report.dry_run:
            typer.echo(head + (f" {len(o.actions)} action(s)" if o.actions else ""))
            for a in report.plan.pfs:
                if a.pf == o.pci:
                    for action in a.actions:
                        typer.echo(f"    {action.describe()}")
        else:
            typer.echo(head + (f" {o.writes} write(s)" if o.writes else ""))


@app.command()
def status(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Per PF: driver, VF counts and each VF's driver; compared with the config when there is one."""
    import os

    from sriov_node.apply import config_path, load_desired
    from sriov_node.status import build_status

    host = _host(ctx)
    path = config_path(host, ctx.obj.config)
    problem: Optional[SriovNodeError] = None
    desired = None
    try:
        if ctx.obj.config is not None or os.path.exists(path):
            desired = load_desired(host, path)
    except SriovNodeError as exc:
        problem = exc
    observed = host.observe(netlink_macs=bool(desired and any(s.selector.mac for s in desired.pfs)))
    try:
        body = build_status(observed, desired)
    except SriovNodeError as exc:  # the config does not fit this host: show the host anyway
        problem, body = exc, build_status(observed, None)
    if problem is not None:
        body["error"] = str(problem)
    _print_status(body, as_json)
    if problem is not None:
        _fail(problem, False)


def _print_status(body, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    if not body["pfs"]:
        typer.echo("no SR-IOV PFs found" + ("" if body["iommu_groups"] else "; the IOMMU is off"))
    for pf in body["pfs"]:
        mark = {None: "", True: "converged", False: "DIFFERS"}[pf["converged"]]
        typer.echo(f"{pf['pci']}  {pf['name'] or '-':<10} {pf['driver'] or 'no driver':<10} "
                   f"VFs {pf['num_vfs']}/{pf['total_vfs']}  {mark}".rstrip())
        for vf in pf["vfs"]:
            flag = {None: "", True: "ok", False: f"want {vf['desired_driver']}"}[vf["matches"]]
            typer.echo(f"    vf{vf['index']:<4} {vf['pci']}  {vf['driver'] or '-':<10} {vf['netdev'] or '-':<14} {flag}".rstrip())
    for notice in body["notices"]:
        typer.echo(f"note: {notice}", err=True)


@sim_app.command("create")
def sim_create(
    directory: str = typer.Argument(..., help="Where to build the simulated host."),
    nic: List[str] = typer.Option(["x710:2"], "--nic", help="MODEL[:PFS[:TOTALVFS]]; models: x710 e810 cx5 i350 82599."),
    iommu: str = typer.Option("on", "--iommu", help="on|off"),
    bios_sriov: str = typer.Option("on", "--bios-sriov", help="off: firmware hides the SR-IOV capability"),
    no_mmio: bool = typer.Option(False, "--no-mmio", help="No MMIO for VF BARs: enabling VFs fails with ENOMEM."),
    vfio_loaded: bool = typer.Option(False, "--vfio-loaded", help="Start with vfio-pci already loaded."),
) -> None:
    """Build a simulated host (a sysfs-shaped tree whose writes obey the kernel's rules)."""
    from sriov_node.sim.build import create_host, parse_nic

    for name, value in (("--iommu", iommu), ("--bios-sriov", bios_sriov)):
        if value not in ("on", "off"):
            typer.echo(f"error: {name} takes on or off, not {value!r}", err=True)
            raise typer.Exit(EXIT_INVALID)
    try:
        nics = [parse_nic(n) for n in nic]
        root = create_host(directory, nics, iommu=iommu == "on", bios_sriov=bios_sriov == "on",
                           mmio=not no_mmio, vfio_loaded=vfio_loaded)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)
    typer.echo(f"simulated host at {root}: {', '.join(nic)}")


@sim_app.command("hold")
def sim_hold(
    directory: str,
    vf: str = typer.Argument(..., help="VF PCI address bound to vfio-pci."),
    pid: int = typer.Option(4242, "--pid"),
    comm: str = typer.Option("qemu-kvm", "--comm"),
) -> None:
    """Pretend a process holds the VF's /dev/vfio group open (like a running VM)."""
    from sriov_node.sim.kernel import SimKernel

    try:
        SimKernel(directory).hold_vf(vf, pid, comm)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)


@sim_app.command("release")
def sim_release(directory: str, pid: int = typer.Option(4242, "--pid")) -> None:
    """Undo `sim hold`."""
    from sriov_node.sim.kernel import SimKernel

    SimKernel(directory).release(pid)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # e.g. `sriov-node status | head`
        sys.exit(0)
