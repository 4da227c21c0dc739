"""export, set, unset, capture, metrics: from one node to the cluster."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from sriov_node.cli.app import Interrupts, app, check_timeout, complete_pf, echo_problems, error_body, fail, open_root
from sriov_node.errors import EXIT_INVALID, SriovNodeError, UsageError

export_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                         help="Export what the node provides for the cluster's components.")
app.add_typer(export_app, name="export")


def _emit(text: str, output: Optional[str], what: str) -> None:
    """`text` on stdout (no `output`, or "-"), or atomically into `output` (a line on stderr says so)."""
    if output is None or output == "-":
        typer.echo(text, nl=False)
        return
    from sriov_node.atomic import write_atomic

    write_atomic(output, text.encode())
    typer.echo(f"wrote {what} to {output}", err=True)


# ---------------------------------------------------------------------------- export device-plugin


@export_app.command("device-plugin")
def export_device_plugin(
    ctx: typer.Context,
    json_only: bool = typer.Option(False, "--json-only", help="Print config.json alone (errors as JSON too), not a ConfigMap."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE (atomically) instead of stdout."),
    configmap: Optional[str] = typer.Option(None, "--configmap", help="The ConfigMap's name [default: sriovdp-config]."),
    namespace: Optional[str] = typer.Option(None, "--namespace", help="The ConfigMap's namespace [default: kube-system]."),
) -> None:
    """The SR-IOV device plugin's config.json as a ConfigMap, with selectors that match exactly the VFs the config
    gives a `resource`. Exit 0 written, 1 a block with a resource does not fit this host, 2 invalid config or options."""
    from sriov_node.export import DEFAULT_CONFIGMAP, DEFAULT_NAMESPACE, check_names, configmap_yaml, device_plugin_config
    from sriov_node.reconcile import config_path, load_desired

    if json_only and (configmap is not None or namespace is not None):
        fail(UsageError("--configmap and --namespace name the ConfigMap, and --json-only prints config.json alone; "
                        "drop one or the other"), True)
    configmap = configmap or DEFAULT_CONFIGMAP
    namespace = namespace or DEFAULT_NAMESPACE
    why = check_names(configmap, namespace)
    if why:
        fail(UsageError(why), json_only)
    host = open_root(ctx, json_only)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        export = device_plugin_config(host, desired)
        text = export.json_text() if json_only else configmap_yaml(
            export, name=configmap, namespace=namespace, source=desired.source)
        _emit(text, output, "the device plugin config" if json_only else f"ConfigMap {namespace}/{configmap}")
    except SriovNodeError as exc:
        fail(exc, json_only)
    for note in export.notes:
        typer.echo(f"note: {note}", err=True)


# ---------------------------------------------------------------------------- set / unset


@app.command("set")
def set_(
    ctx: typer.Context,
    pf: str = typer.Argument(..., help="The PF: an interface name (ens1f0), a PCI address (0000:3b:00.0) or a MAC.",
                             autocompletion=complete_pf),
    assignments: List[str] = typer.Argument(..., help="KEY=VALUE: num_vfs=8, vfs=0-3:vfio-pci (repeat; the whole "
                                                       "VF layout), mtu=9000, eswitch_mode=switchdev; KEY= removes KEY."),
    no_apply: bool = typer.Option(False, "--no-apply", help="Only edit the config file."),
    as_json: bool = typer.Option(False, "--json"),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use (as apply --force)."),
    timeout: float = typer.Option(60.0, "--timeout", callback=check_timeout, help="Deadline in seconds for each wait."),
) -> None:
    """Change one PF's block in the config (comments and layout kept; the old file kept as .bak), then apply it.

    Exit codes as apply: 0 converged, 1 a PF failed (or the PF is not on this host), 2 the edit would make the
    config invalid (the file is left unchanged), 3 refused (VFs in use), 130/143 stopped by a signal.
    """
    from sriov_node.edit import edit_config, parse_assignments

    host = open_root(ctx, as_json)
    try:
        edit = parse_assignments(assignments)
        result = edit_config(host, ctx.obj.config, pf, edit)
    except SriovNodeError as exc:
        fail(exc, as_json)
    body = result.to_dict()
    if not as_json:
        _print_edit(result)
    if no_apply:
        if as_json:
            typer.echo(json.dumps({**body, "apply": None}, indent=2))
        raise typer.Exit(0)
    _apply_edited(host, result, body, as_json=as_json, force=force, timeout=timeout)


@app.command("unset")
def unset(
    ctx: typer.Context,
    pf: str = typer.Argument(..., help="The PF whose block to remove: interface name, PCI address or MAC.",
                             autocompletion=complete_pf),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove a PF's block from the config (the old file kept as .bak). The PF's VFs stay as they are
    (run `sriov-node set PF num_vfs=0` first to remove them). Exit 0 removed or nothing to remove, 2 refused."""
    from sriov_node.edit import remove_block

    host = open_root(ctx, as_json)
    try:
        result = remove_block(host, ctx.obj.config, pf)
    except SriovNodeError as exc:
        fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_edit(result)


def _print_edit(result) -> None:
    if not result.changed:
        typer.echo(f"{result.path}: unchanged" + (f" ({result.note})" if result.note else ""))
        return
    typer.echo(result.diff(), nl=False)
    typer.echo(f"{result.path}: {result.summary()}" + (f"; previous version in {result.backup}" if result.backup else ""))


def _apply_edited(host, result, body, *, as_json: bool, force: bool, timeout: float) -> None:
    """Apply the PF that was just edited, as `apply` would, and exit with apply's code."""
    from sriov_node.progress import terminal_progress
    from sriov_node.reconcile import reconcile

    if not result.only:  # the block selects no PF here: nothing to apply, the reason is the outcome
        if as_json:
            typer.echo(json.dumps({**body, "apply": {"pfs": [o.to_dict() for o in result.unresolved],
                                                     "exit_code": 1}}, indent=2))
        for o in result.unresolved:
            for line in (o.error or "").splitlines():
                typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1 if result.unresolved else 0)
    with Interrupts() as interrupts:
        try:
            with terminal_progress(host, result.desired, as_json=as_json) as progress:
                report = reconcile(host, result.desired, only=result.only, force=force, timeout=timeout,
                                   cancelled=interrupts.cancelled, progress=progress)
        except SriovNodeError as exc:
            if as_json:
                typer.echo(json.dumps({**body, "apply": {"error": error_body(exc)}}, indent=2))
            for line in str(exc).splitlines():
                typer.echo(f"error: {line}", err=True)
            raise typer.Exit(exc.exit_code)
    outcomes = list(report.outcomes) + list(result.unresolved)
    code = report.exit_code if not result.unresolved else max(report.exit_code, 1)
    if as_json:
        applied = report.to_dict()
        applied["pfs"] += [o.to_dict() for o in result.unresolved]
        applied["exit_code"] = code
        typer.echo(json.dumps({**body, "apply": applied}, indent=2))
    else:
        for o in outcomes:
            typer.echo(f"{o.pci or '-':<12}  {o.name or '-':<10} {o.key:<6} {o.status}"
                       + (f" {o.writes} write(s)" if o.writes else ""))
    echo_problems(report.notices, outcomes)
    raise interrupts.exit(code)


# ---------------------------------------------------------------------------- capture


@app.command()
def capture(
    ctx: typer.Context,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE (atomically; an existing FILE is "
                                                                       "kept as FILE.bak) instead of stdout."),
    by: str = typer.Option("pci", "--by", help="How each block selects its PF: pci or name."),
) -> None:
    """Write the host's current SR-IOV layout as a config: PFs with VFs, their count, VF drivers and settings.
    `apply` of the result changes nothing. Exit 0, 1 the file cannot be written, 2 bad options."""
    from sriov_node.capture import capture_config

    if by not in ("pci", "name"):
        fail(UsageError(f"--by takes pci or name, not {by!r}"), False)
    host = open_root(ctx)
    try:
        text = capture_config(host, by=by)
        if output is None or output == "-":
            typer.echo(text, nl=False)
        else:
            import os

            from sriov_node.atomic import write_atomic

            previous = None
            if os.path.isfile(output):
                with open(output, "rb") as fh:
                    previous = fh.read()
            backup = write_atomic(output, text.encode(), backup=previous)
            typer.echo(f"wrote {output}" + (f"; previous version in {backup}" if backup else ""), err=True)
    except SriovNodeError as exc:
        fail(exc, False)


# ---------------------------------------------------------------------------- metrics


@app.command()
def metrics(
    ctx: typer.Context,
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Write to FILE (atomically; '-' or a pipe or "
                                                                       "device such as /dev/stdout: written through) "
                                                                       "[default: the config's [metrics] textfile, "
                                                                       "else stdout]."),
) -> None:
    """Prometheus metrics for node_exporter's textfile collector: VFs desired and present per PF, convergence,
    the last apply. Exit 0, 1 the file cannot be written, 2 invalid config (the metrics are still written, with
    sriov_node_config_valid 0)."""
    import os

    from sriov_node.atomic import OutputError
    from sriov_node.errors import ConfigError
    from sriov_node.metrics import read_only_hint, render, textfile_path
    from sriov_node.reconcile import config_path, load_desired

    host = open_root(ctx)
    path = config_path(host, ctx.obj.config)
    desired, problem = None, None
    try:
        if ctx.obj.config is not None or os.path.exists(path):
            desired = load_desired(host, path)
    except ConfigError as exc:
        problem = exc
    target = output or (textfile_path(host, desired) if desired is not None else None)
    try:
        try:
            _emit(render(host, desired, config_valid=problem is None), target, "metrics")
        except OutputError as exc:
            hint = read_only_hint(target) if target and target != "-" else None
            raise OutputError(f"{exc}; {hint}") if hint else exc
    except SriovNodeError as exc:
        fail(exc, False)
    if problem is not None:
        for line in str(problem).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_INVALID)
