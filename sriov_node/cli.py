"""Command line: argument parsing, exit codes, text or --json output. No logic of its own."""

from __future__ import annotations

import json
import math
import signal
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, NoReturn, Optional

import typer

from sriov_node.errors import EXIT_INVALID, EXIT_PF_FAILED, ConfigError, HostError, SriovNodeError, UsageError

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


def _error_body(exc: SriovNodeError) -> Dict[str, Any]:
    body: Dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}
    if isinstance(exc, ConfigError):
        body["problems"] = [{"key": p.key, "message": p.message} for p in exc.problems]
    if isinstance(exc, HostError):
        body.update(exc.to_dict())
    return body


def _fail(exc: SriovNodeError, as_json: bool) -> NoReturn:
    """Print the error (one JSON document on stdout with --json; sentences on stderr always) and exit."""
    if as_json:
        typer.echo(json.dumps({"error": _error_body(exc)}, indent=2))
    for line in str(exc).splitlines():
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(exc.exit_code)


def _host(ctx: typer.Context, as_json: bool = False):
    import os

    from sriov_node.host import open_host

    if not os.path.isdir(ctx.obj.root):
        _fail(UsageError(f"--root {ctx.obj.root}: no such directory"), as_json)
    return open_host(ctx.obj.root)


def _timeout(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise typer.BadParameter(f"must be a finite number of seconds above 0, not {value}")
    return value


class _Interrupts:
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

    def __enter__(self) -> "_Interrupts":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@app.callback()
def _global(
    ctx: typer.Context,
    root: str = typer.Option("/", "--root", envvar="SRIOV_NODE_ROOT", help="Root prefix for /sys, /proc, /dev, /run, /var/lib, /etc."),
    config: Optional[str] = typer.Option(None, "--config", envvar="SRIOV_NODE_CONFIG", help="Desired state [default: ROOT/etc/sriov-node/config.toml]."),
) -> None:
    ctx.obj = Options(root=root, config=config)


@app.command()
def validate(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the config against its schema and this host's PFs. Exit 0 valid, 1 a block cannot apply here, 2 invalid."""
    from sriov_node.reconcile import config_path, load_desired, survey

    host = _host(ctx, as_json)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        _, resolution = survey(host, desired)
    except SriovNodeError as exc:
        _fail(exc, as_json)
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
    timeout: float = typer.Option(60.0, "--timeout", callback=_timeout, help="Deadline in seconds for each wait (finite, > 0)."),
) -> None:
    """Converge the host to the config. Exit 0 converged, 1 a PF failed, 2 invalid config, 3 refused (VFs in use).

    SIGINT/SIGTERM stop between actions, run the plan's clean-up, and exit 130/143.
    """
    from sriov_node.reconcile import config_path, load_desired, reconcile

    host = _host(ctx, as_json)
    with _Interrupts() as interrupts:
        try:
            desired = load_desired(host, config_path(host, ctx.obj.config))
            report = reconcile(host, desired, dry_run=dry_run, force=force, timeout=timeout,
                               cancelled=interrupts.cancelled)
        except SriovNodeError as exc:
            _fail(exc, as_json)
    if as_json:
        body = report.to_dict()
        if dry_run:
            body = {"actions": body["actions"], "on_failure": body["on_failure"], "pfs": body["pfs"]}
        typer.echo(json.dumps(body, indent=2))
    else:
        _print_report(report)
    for notice in report.notices:
        typer.echo(f"note: {notice}", err=True)
    for outcome in report.outcomes:
        for line in (outcome.error or "").splitlines():
            typer.echo(f"error: {line}", err=True)
    if interrupts.signum is not None:
        raise typer.Exit(128 + interrupts.signum)
    raise typer.Exit(report.exit_code)


def _print_report(report) -> None:
    if not report.outcomes:
        typer.echo("no PFs selected")
    width = max([len(o.name or "-") for o in report.outcomes] + [4])
    plans = {p.pf: p for p in report.plan.pfs}
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

    from sriov_node.reconcile import config_path, load_desired
    from sriov_node.status import build_status

    host = _host(ctx, as_json)
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
        body["error"] = _error_body(problem)
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
                flag = ""
            elif vf["matches"]:
                flag = f"ok ({vf['desired_driver']})"
            else:
                flag = "DIFFERS: " + "; ".join(vf["findings"])
            typer.echo(f"    vf{vf['index']:<4} {vf['pci']}  {vf['driver'] or '-':<10} {vf['netdev'] or '-':<14} {flag}".rstrip())
    shown = {pf["pci"] for pf in body["pfs"]}
    for block in body["blocks"]:
        if block["pf"] not in shown:
            typer.echo(f"{block['block']}: NOT APPLIED: {block['message']}")
    for notice in body["notices"]:
        typer.echo(f"note: {notice}", err=True)
    last = body.get("last_apply")
    if last:
        typer.echo(f"last apply: {last['time']}: {last['result']} ({last['writes']} write(s))")


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
