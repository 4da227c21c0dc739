"""export, set, unset, capture, metrics: from one node to the cluster."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from sriov_node.cli.app import (
    Interrupts,
    app,
    check_timeout,
    complete_pf,
    echo_problems,
    error_body,
    examples,
    fail,
    open_root,
)
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


@export_app.command("device-plugin", epilog=examples("sriov-node export device-plugin | kubectl apply -f -", "sriov-node export device-plugin --json-only -o /etc/pcidp/config.json", "sriov-node export device-plugin --node worker-1 --merge cm.yaml"))
def export_device_plugin(
    ctx: typer.Context,
    json_only: bool = typer.Option(False, "--json-only", help="Print config.json alone (errors as JSON too), not a ConfigMap."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write to FILE (atomically) instead of stdout."),
    configmap: Optional[str] = typer.Option(None, "--configmap", metavar="NAME", help="The ConfigMap's name [default: sriovdp-config]."),
    namespace: Optional[str] = typer.Option(None, "--namespace", metavar="NAMESPACE", help="The ConfigMap's namespace [default: kube-system]."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NODE", help="One ConfigMap for the cluster, a key per node: this "
                                                            "node's config.json under key NODE (the plugin reads "
                                                            "/etc/pcidp/$(NODE_NAME))."),
    merge: Optional[str] = typer.Option(None, "--merge", metavar="FILE", help="With --node: the existing ConfigMap (YAML, or JSON as "
                                                              "kubectl -o json prints it) whose other keys, name, "
                                                              "namespace, labels and annotations are kept."),
) -> None:
    """The SR-IOV device plugin's config.json as a ConfigMap, with selectors that match exactly the VFs the config
    gives a `resource`. Exit 0 written, 1 a block with a resource does not fit this host, 2 invalid config or options."""
    from sriov_node.engine.device_plugin import device_plugin_config
    from sriov_node.views.export import (DEFAULT_CONFIGMAP, DEFAULT_NAMESPACE, check_names, check_node, configmap_yaml,
                                         node_configmap_yaml, read_configmap)
    from sriov_node.engine.reconcile import config_path, load_desired

    if json_only and (configmap is not None or namespace is not None or node is not None):
        fail(UsageError("--configmap, --namespace and --node make a ConfigMap, and --json-only prints config.json "
                        "alone; drop one or the other"), True)
    if merge is not None and node is None:
        fail(UsageError("--merge FILE adds this node's key to a ConfigMap: say which key with --node NAME"), False)
    why = check_names(configmap or DEFAULT_CONFIGMAP, namespace or DEFAULT_NAMESPACE) or (check_node(node) if node
                                                                                          else None)
    if why:
        fail(UsageError(why), json_only)
    merged = None
    if merge is not None:
        try:
            merged = read_configmap(merge)
        except SriovNodeError as exc:
            fail(exc, False)
    host = open_root(ctx, json_only)
    try:
        desired = load_desired(host, config_path(host, ctx.obj.config))
        export = device_plugin_config(host, desired)
        if json_only:
            text, what = export.json_text(), "the device plugin config"
        elif node is not None:
            text = node_configmap_yaml(export, node, name=configmap, namespace=namespace, merge=merged,
                                       source=desired.source)
            what = f"key {node} of the ConfigMap"
        else:
            configmap, namespace = configmap or DEFAULT_CONFIGMAP, namespace or DEFAULT_NAMESPACE
            text = configmap_yaml(export, name=configmap, namespace=namespace, source=desired.source)
            what = f"ConfigMap {namespace}/{configmap}"
        _emit(text, output, what)
    except SriovNodeError as exc:
        fail(exc, json_only)
    for note in export.notes:
        typer.echo(f"note: {note}", err=True)


# ---------------------------------------------------------------------------- set / unset


@app.command("set", epilog=examples("sriov-node set ens1f0 num_vfs=16", "sriov-node set ens1f0 vfs=0-7:vfio-pci vfs=8-15:iavf", "sriov-node set ens1f0 'vfs[8-15].vlan=100' 'vfs[8-15].trust=true'"))
def set_(
    ctx: typer.Context,
    pf: str = typer.Argument(..., metavar="PF", help="The PF: an interface name (ens1f0), a PCI address (0000:3b:00.0) or a MAC.",
                             autocompletion=complete_pf),
    assignments: List[str] = typer.Argument(..., metavar="KEY=VALUE...", help="KEY=VALUE: a PF key (num_vfs=8, mtu=9000, "
                                                       "eswitch_mode=switchdev, drivers_autoprobe=false, "
                                                       "externally_managed=true); the VF layout vfs=RANGE[:DRIVER] "
                                                       "(repeat: the whole layout); a VF group's key "
                                                       "'vfs[RANGE].KEY=VALUE' (resource, vlan, qos, vlan_proto, mac, "
                                                       "spoofchk, trust, link_state, min_tx_rate, max_tx_rate, mtu, "
                                                       "driver); KEY= removes KEY."),
    no_apply: bool = typer.Option(False, "--no-apply", help="Validate (schema, this host's PFs) and save the file; "
                                                            "apply nothing (the node keeps its applied generation)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use (as apply --force)."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout,
                                  help="Deadline in seconds for each wait (the apply lock included)."),
) -> None:
    """Change one PF's block in the config (comments and layout kept), apply it, and save it only once the PF
    converged to it (the old file kept as .bak, a new generation recorded). Refused or failed: the file stays
    byte for byte, the edit is kept in config.toml.rejected.

    Exit codes as apply: 0 converged, 1 a PF failed (or the PF is not on this host), 2 the edit would make the
    config invalid or lose keys (nothing written), 3 refused (VFs in use), 130/143 stopped by a signal.
    """
    from sriov_node.authoring.toml_blocks import parse_assignments

    try:
        edit = parse_assignments(assignments)
    except SriovNodeError as exc:
        fail(exc, as_json)
    _transact(ctx, pf, edit, "set", no_apply=no_apply, as_json=as_json, force=force, timeout=timeout)


@app.command("unset", epilog=examples("sriov-node unset ens1f0 mtu", "sriov-node unset ens1f0 'vfs[8-15].vlan'", "sriov-node unset ens1f0"))
def unset(
    ctx: typer.Context,
    pf: str = typer.Argument(..., metavar="PF", help="The PF: interface name, PCI address or MAC.", autocompletion=complete_pf),
    keys: Optional[List[str]] = typer.Argument(None, metavar="[KEY]...", help="KEYs to remove: a PF key (mtu), a VF group's key "
                                                          "('vfs[0-3].vlan'), a group ('vfs[0-3]'), every group "
                                                          "(vfs). None: remove the PF's whole block."),
    no_apply: bool = typer.Option(False, "--no-apply", help="Validate and save the file; apply nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use (as apply --force)."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout,
                                  help="Deadline in seconds for each wait (the apply lock included)."),
) -> None:
    """Remove KEYs of a PF's block, applied as `set` does; without KEYs, remove the whole block (the PF's VFs
    stay as they are: run `sriov-node set PF num_vfs=0` first to remove them). Exit codes as set; 0 also when
    there is nothing to remove."""
    from sriov_node.authoring.toml_blocks import parse_assignments

    edit = None
    if keys:
        try:
            edit = parse_assignments(keys, unset=True)
        except SriovNodeError as exc:
            fail(exc, as_json)
    _transact(ctx, pf, edit, "unset", no_apply=no_apply, as_json=as_json, force=force, timeout=timeout)


def _transact(ctx, pf: str, edit, command: str, *, no_apply: bool, as_json: bool, force: bool,
              timeout: float) -> None:
    """Edit, apply and save under the apply lock (sriov_node.authoring.transaction.Transaction), and exit with apply's code."""
    from sriov_node.authoring.transaction import Transaction
    from sriov_node.views.progress import terminal_progress

    host = open_root(ctx, as_json)

    def waiting(holder: str) -> None:
        typer.echo(f"waiting for the apply lock ({holder or 'another sriov-node run'}), at most {timeout:g}s",
                   err=True)

    body: dict = {}
    with Interrupts() as interrupts:
        try:
            if not no_apply and edit is not None:
                host.check_writable()  # a captured tree: refused before the lock, as apply does
            with Transaction(host, ctx.obj.config, timeout=timeout, command=command, cancelled=interrupts.cancelled,
                             on_wait=waiting) as tx:
                result = tx.prepare(pf, edit) if edit is not None else tx.prepare_removal(pf)
                body = result.to_dict()
                if not as_json and result.changed:
                    typer.echo(result.diff(), nl=False)
                if result.removed and not result.changed:  # no block to remove
                    _say(body, f"{result.path}: unchanged ({result.note})", as_json)
                    raise typer.Exit(0)
                if no_apply:
                    if result.unresolved:  # --no-apply still validates against this host's PFs
                        _not_here(body, result.unresolved, as_json)
                    refused = _refused_here(host, result)  # and their drivers, as validate does
                    if refused:
                        _not_here(body, refused, as_json)
                    backup = tx.save()
                    body.update(saved=result.changed, backup=backup, generation=None, apply=None)
                    _say(body, f"{result.path}: {result.summary() if result.changed else 'unchanged'}"
                         + (f"; previous version in {backup}" if backup else "")
                         + "; NOT applied: the node keeps converging to its applied generation "
                           "(sriov-node apply applies the file)", as_json)
                    raise typer.Exit(0)
                with terminal_progress(host, result.desired if tx.runs else None, as_json=as_json) as progress:
                    report = tx.apply(force=force, progress=progress)
                done = tx.finish(report)
        except SriovNodeError as exc:
            if body and as_json:
                typer.echo(json.dumps({**body, "error": error_body(exc)}, indent=2))
                as_json = False  # the JSON document is out; the sentences follow on stderr
            fail(exc, as_json)
    outcomes = list(report.outcomes) + list(tx.unresolved)
    code = interrupts.decide(done.exit_code)  # once, before the report: a signal until now is its exit
    applied = report.to_dict()
    applied["pfs"] += [o.to_dict() for o in tx.unresolved]
    applied["exit_code"] = code
    applied["interrupted"] = bool(applied.get("interrupted")) or code >= 128
    body.update(done.to_dict(), apply=applied)
    if "exit_code" in body:
        body["exit_code"] = code
    if code >= 128:  # a signal came before the report: the document says so, as every command's does
        body["interrupted"] = True
    if not as_json:
        from sriov_node.views.render import put_back_lines

        for o in outcomes:
            typer.echo(f"{o.pci or '-':<12}  {o.name or '-':<10} {o.key:<6} {o.status}"
                       + (f" {o.writes} write(s)" if o.writes else ""))
        for line in put_back_lines(report):
            typer.echo(line)
    _say(body, done.message, as_json, error=done.exit_code != 0)
    echo_problems(report.notices, outcomes)
    if done.restore is not None:
        echo_problems(done.restore.notices, [o for o in done.restore.outcomes if o.pci is not None])
    raise typer.Exit(code)


def _say(body: dict, line: str, as_json: bool, *, error: bool = False) -> None:
    """The verdict: the JSON document (with --json), and the sentence (stderr for an error)."""
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        if error:
            typer.echo(f"error: {line}", err=True)
    else:
        typer.echo(f"error: {line}" if error else line, err=error)


def _refused_here(host, result) -> list:
    """The edited block's PFs whose plan has a step this host refuses (a driver's limit, a module it
    does not have), judged as `validate` judges them: an edit saved without applying it must pass
    `validate` as the next apply will run it."""
    if result.desired is None or not result.only:
        return []
    from sriov_node.engine.reconcile import reconcile, unsupported

    planned = reconcile(host, result.desired, only=result.only, dry_run=True)
    return [o for o in planned.outcomes if unsupported(o)]


def _not_here(body: dict, unresolved, as_json: bool) -> None:
    """The edited block does not fit this host: nothing written, exit 1."""
    if as_json:
        typer.echo(json.dumps({**body, "saved": False, "apply": {"pfs": [o.to_dict() for o in unresolved],
                                                                  "exit_code": 1}}, indent=2))
    for o in unresolved:
        for line in (o.error or "").splitlines():
            typer.echo(f"error: {line}", err=True)
    typer.echo(f"error: {body['config']}: the edit does not fit this host; nothing was written", err=True)
    raise typer.Exit(1)


# ---------------------------------------------------------------------------- capture


@app.command(epilog=examples("sriov-node capture", "sriov-node capture --by name -o /etc/sriov-node/config.toml",
                             "sriov-node capture enp59s0f0np0 --by altname"))
def capture(
    ctx: typer.Context,
    pfs: Optional[List[str]] = typer.Argument(None, metavar="[PF]...", help="Only these PFs, each by PCI address, "
                                              "netdev name or alternative name (altname), as a [[pf]] block selects "
                                              "it; default: every PF with VFs."),
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write to FILE (atomically; an existing FILE is "
                                                                       "kept as FILE.bak) instead of stdout."),
    by: str = typer.Option("pci", "--by", metavar="pci|name|altname", help="How each block selects its PF: pci, "
                           "name, or altname (the PF netdev's first alternative name)."),
) -> None:
    """Write the host's current SR-IOV layout as a config: PFs with VFs, their count, VF drivers and settings.
    `apply` of the result changes nothing. Exit 0, 1 the file cannot be written, 2 bad options."""
    from sriov_node.authoring.capture import capture_config

    if by not in ("pci", "name", "altname"):
        fail(UsageError(f"--by takes pci, name or altname, not {by!r}"), False)
    host = open_root(ctx)
    try:
        text = capture_config(host, by=by, pfs=tuple(pfs or ()))
        if output is None or output == "-":
            typer.echo(text, nl=False)
        else:
            import os

            from sriov_node.atomic import OutputError, write_atomic
            from sriov_node.files import CONFIG_LIMIT, read_regular

            previous = None
            if os.path.isfile(output):
                try:  # kept as FILE.bak: read as the config is (a regular file, at most a config's size)
                    previous = read_regular(output, limit=CONFIG_LIMIT)
                except OSError as exc:
                    raise OutputError(f"cannot keep the previous version: {exc}")
            backup = write_atomic(output, text.encode(), backup=previous)
            typer.echo(f"wrote {output}" + (f"; previous version in {backup}" if backup else ""), err=True)
    except SriovNodeError as exc:
        fail(exc, False)


# ---------------------------------------------------------------------------- metrics


@app.command(epilog=examples("sriov-node metrics -o -", "sriov-node metrics -o /var/lib/prometheus/node-exporter/sriov_node.prom"))
def metrics(
    ctx: typer.Context,
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="FILE", help="Write to FILE (atomically; '-' or a pipe or "
                                                                       "device such as /dev/stdout: written through) "
                                                                       "[default: the config's [metrics] textfile, "
                                                                       "else /var/lib/prometheus/node-exporter/"
                                                                       "sriov_node.prom when that directory exists, "
                                                                       "else stdout]."),
) -> None:
    """Prometheus metrics for node_exporter's textfile collector: VFs desired and present per PF, convergence,
    the last apply. Exit 0, 1 the file cannot be written, 2 invalid config (the metrics are still written, with
    sriov_node_config_valid 0)."""
    import os

    from sriov_node.atomic import OutputError
    from sriov_node.errors import ConfigError
    from sriov_node.views.metrics import read_only_hint, render, textfile_path
    from sriov_node.engine.reconcile import config_path, load_desired

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
            _emit(render(host, desired, config_valid=problem is None, config_file=path), target, "metrics")
        except OutputError as exc:
            hint = read_only_hint(target) if target and target != "-" else None
            raise OutputError(f"{exc}; {hint}") if hint else exc
    except SriovNodeError as exc:
        fail(exc, False)
    from sriov_node.engine.state import load_state

    unusable = load_state(host)[1]  # the last-apply metrics are left out: say why
    if unusable:
        typer.echo(f"note: {unusable}", err=True)
    if problem is not None:
        for line in str(problem).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(EXIT_INVALID)
