"""boot and daemon: the systemd entry points (a oneshot at boot, a udev-driven daemon; their bodies: sriov_node.cli.hot); udev-rule."""

from __future__ import annotations

import typer

from sriov_node.cli.app import app, check_timeout, examples, fail, open_root
from sriov_node.errors import SriovNodeError


@app.command(epilog=examples("sriov-node boot --wait 30", "systemctl status sriov-node.service"))
def boot(
    ctx: typer.Context,
    wait: float = typer.Option(60.0, "--wait", metavar="SECONDS", callback=check_timeout,
                               help="How long to wait for configured PFs to appear and get their driver."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout, help="Deadline for each engine wait."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
) -> None:
    """Boot-time oneshot: converge each configured PF as soon as it is there with its driver.

    Exit 0 all converged, 1 a PF failed or never appeared within --wait, 2 invalid config, 3 refused.
    """
    from sriov_node.cli import hot

    hot.boot(ctx.obj, wait=wait, timeout=timeout, as_json=as_json)


@app.command(epilog=examples("sriov-node daemon --no-notify", "systemctl reload sriov-node-agent.service"))
def daemon(
    ctx: typer.Context,
    no_notify: bool = typer.Option(False, "--no-notify", help="No sd_notify (run in the foreground to debug)."),
    debounce: float = typer.Option(0.05, "--debounce", metavar="SECONDS", callback=check_timeout,
                                   help="Longest quiet time that ends a burst of uevents, in seconds (shorter once the burst's rhythm is known)."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout, help="Deadline for each engine wait."),
) -> None:
    """Keep the node converged to the applied generation: react to uevents (PF driver reload, hotplug, VFs removed) per PF.

    Follows each new generation (apply, set, rollback...) at once and never applies an edited file
    on its own; restores the previous generation when a checkpoint passes its deadline uncommitted.
    SIGHUP (systemctl reload) applies the config file now and records it (an invalid one is refused,
    the applied generation kept); SIGTERM stops between actions.
    """
    from sriov_node.cli import hot

    hot.daemon(ctx.obj, no_notify=no_notify, debounce=debounce, timeout=timeout)


@app.command("udev-rule", epilog=examples("sriov-node udev-rule > /etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules"))
def udev_rule(ctx: typer.Context) -> None:
    """Print a udev rule that keeps NetworkManager off the VFs of the PFs this config manages.

    For each block with eswitch_mode = "switchdev" it also names the representors from their
    phys_port_name (representor_name, default "{pf}_{vf}"), keeps them off NetworkManager and keeps
    the PF's own name across the eswitch change."""
    from sriov_node.engine.survey import config_path, load_desired, survey
    from sriov_node.errors import ConfigError, ConfigProblem
    from sriov_node.model import DEFAULT_REPRESENTOR_NAME
    from sriov_node.service.udev import RepresentorPf, managed_vfs_rule, representor_rules

    host = open_root(ctx)
    try:
        path = config_path(host, ctx.obj.config)
        desired = load_desired(host, path)
        resolution = survey(host, desired).resolution
        switchdev = [RepresentorPf(t.spec.key, t.pf.pci, t.pf.name, t.spec.num_vfs,
                                   t.spec.representor_name or DEFAULT_REPRESENTOR_NAME, _permanent_mac(host, t.pf))
                     for t in resolution.targets if t.spec.eswitch_mode == "switchdev"]
        representors, problems = representor_rules(switchdev)
        # names that clash on this host fail their block (engine/resolve.py): no rule is printed for them
        from sriov_node.engine.resolve import INVALID_HERE

        problems = [(f"{f.key}.{f.attr}", f.message) for f in resolution.failures
                    if f.kind == INVALID_HERE and f.attr == "representor_name"] + problems
        if problems:
            raise ConfigError(path, [ConfigProblem(key, why) for key, why in problems])
    except SriovNodeError as exc:
        fail(exc, False)
    typer.echo(managed_vfs_rule(sorted(t.pf.pci for t in resolution.targets if t.pf.bus == "pci")), nl=False)
    if representors:
        typer.echo(representors, nl=False)


def _permanent_mac(host, pf):
    """The PF's permanent MAC (the rule pins the PF's name by it too), None where unknown."""
    if pf.mac or not pf.name:
        return pf.mac
    try:
        return host.links.permanent_mac(pf.name)
    except OSError:
        return None
