"""check: IOMMU, BIOS/firmware SR-IOV, MMIO, kernel arguments, modules; --fix for the boot loader."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import typer

from sriov_node.cli.app import app, complete_pf, examples, fail, open_root
from sriov_node.errors import EXIT_OK, EXIT_PF_FAILED, ReadOnlyRoot, SriovNodeError, UsageError


@app.command(epilog=examples("sriov-node check", "sriov-node check --pf ens1f0 --json", "sriov-node check --fix --dry-run"))
def check(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
    fix: bool = typer.Option(False, "--fix", help="Give the next boot the IOMMU arguments vfio-pci needs "
                                                  "(boot loader only: Debian gets /etc/default/grub.d/99-sriov-node.cfg "
                                                  "then update-grub, BLS grubby; backups of other files); and ib_core's "
                                                  "netns mode when the config has rdma_netns."),
    dry_run: bool = typer.Option(False, "--dry-run", help="With --fix: show the edits and commands, change nothing."),
    pf: Optional[str] = typer.Option(None, "--pf", metavar="PF", autocompletion=complete_pf, help="Only this PF: a PCI address, an interface name or "
                                                         "VENDOR:DEVICE."),
) -> None:
    """Diagnose the platform for SR-IOV: CPU and IOMMU, kernel arguments now and at the next boot, SR-IOV
    in each PF's config space (BIOS/firmware, VF BARs, ARI), PF drivers, modules, NetworkManager, and the
    RDMA namespace mode (rdma_netns).
    Exit 0 all ok (warnings allowed), 1 a check failed, 2 invalid config."""
    import os

    from sriov_node.views.check_report import parse_selector, run_checks
    from sriov_node.engine.survey import config_path, load_desired

    if dry_run and not fix:
        fail(UsageError("--dry-run goes with --fix (check alone never changes anything)"), as_json)
    host = open_root(ctx, as_json)
    try:
        selector = parse_selector(pf) if pf is not None else None
        path = config_path(host, ctx.obj.config)
        desired = load_desired(host, path) if ctx.obj.config is not None or os.path.exists(path) else None
        if fix and not dry_run and host.kind == "capture":
            raise ReadOnlyRoot(f"{host.root} is a captured tree: check --fix edits only a live root or a simulated "
                               "host (use --fix --dry-run to see the edits)")
        state, scope, report = run_checks(host, desired, selector)
    except SriovNodeError as exc:
        fail(exc, as_json)
    body: Dict[str, Any] = {"root": host.root, "config": desired.source if desired else None,
                            "vfio": scope.vfio, "assumed": None if scope.has_config else
                            "no config: checked for VFs bound to vfio-pci (the recipe --fix applies)"}
    wanted_rdma = desired.rdma_netns if desired is not None else None
    if fix:
        outcome = fix_boot(host, state, scope, dry_run)
        body["fix"] = outcome
        if wanted_rdma is not None:
            body["fix"]["rdma_netns"] = fix_rdma_netns(host, wanted_rdma, dry_run)
        if outcome["changed"] or (wanted_rdma is not None and body["fix"]["rdma_netns"]["changed"]):
            state, scope, report = run_checks(host, desired, selector)
    _check_rdma_netns(host, wanted_rdma, report)
    rdma_problems = (body["fix"].get("rdma_netns") or {}).get("problems") if fix else None
    exit_code = EXIT_PF_FAILED if report.failed or (fix and (body["fix"]["problems"] or rdma_problems)) else EXIT_OK
    counts = report.counts
    body.update(result="fail" if exit_code else ("warn" if counts["warn"] else "ok"), exit_code=exit_code,
                counts=counts, checks=[r.to_dict() for r in report.results],
                reboot_required=_reboot_note(host) if fix else state.reboot_required)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    else:
        _print(body)
    raise typer.Exit(exit_code)


def _reboot_note(host) -> Optional[str]:
    """/run/sriov-node/reboot-required as the fixes left it (read back)."""
    from sriov_node.host.platform import read_file
    from sriov_node.platform import REBOOT_REQUIRED

    return (read_file(host, REBOOT_REQUIRED).text or "").strip() or None


def _check_rdma_netns(host, wanted: Optional[str], report) -> None:
    """The rdma_netns check (only when the config names a mode): ib_core's mode now and at its next load."""
    from sriov_node.checks.rdma import check_rdma_netns
    from sriov_node.host.rdma import observe_rdma_netns

    if wanted is None:
        return
    result = check_rdma_netns(observe_rdma_netns(host, wanted))
    if result is not None:
        report.add(result)


def fix_rdma_netns(host, wanted: str, dry_run: bool) -> Dict[str, Any]:
    """check --fix for rdma_netns: what `apply` does about it too (engine/rdma_netns.py)."""
    from sriov_node.engine.rdma_netns import converge_rdma_netns

    return converge_rdma_netns(host, wanted, dry_run)


SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def _path_dirs(live: bool) -> List[str]:
    dirs = [d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d]
    if live:  # a root-only tool lives in sbin, which a user's PATH may lack
        dirs += [d for d in SBIN if d not in dirs]
    return dirs


def _which(live: bool):
    """Where the fix runs a tool from: PATH (and sbin on the live root)."""
    import shutil

    path = os.pathsep.join(_path_dirs(live))
    return lambda name: shutil.which(name, path=path)


def _which_in_root(root: str):
    """Where `chroot ROOT tool` finds a tool: ROOT's PATH and sbin directories, never leaving ROOT."""
    real_root = os.path.realpath(root)
    dirs = list(dict.fromkeys(_path_dirs(True) + ["/usr/local/bin", "/usr/bin", "/bin"]))

    def find(name: str) -> Optional[str]:
        for d in dirs:
            if not d.startswith("/"):
                continue
            candidate = os.path.join(root, d.lstrip("/"), name)
            real = os.path.realpath(candidate)
            if (real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)) \
                    and os.path.isfile(real) and os.access(real, os.X_OK):
                return d.rstrip("/") + "/" + name
        return None

    return find


def _verify(host, state, plan, outcome) -> List[str]:
    """Read the boot loader back the way check does; the problems (none: the next boot has the arguments)."""
    from sriov_node.checks import kargs
    from sriov_node.checks.diagnose import next_boot, relevant
    from sriov_node.checks.fix import grubby_result
    from sriov_node.host.bootloader import restore
    from sriov_node.host.platform import observe_boot

    problems = []
    for entry, cmd in zip(outcome.commands, plan.commands):
        if entry["ran"] and cmd.backup and state.boot is not None:
            wrong = grubby_result(state.boot, observe_boot(host), plan.needed)
            if wrong:
                for path, backup in zip(cmd.backup, entry.get("backups", [])):
                    restore(host, path, backup)
                problems.append(f"{cmd.argv[0]} did not edit the entries as expected, so they were put back from "
                                "their backups: " + "; ".join(wrong))
    want = plan.needed
    nb = next_boot(observe_boot(host), want)
    if nb.words is not None and not kargs.wants_change(nb.words, want) and not nb.others:
        return problems
    changed = [path for path, _ in outcome.written]
    kept = ""
    if changed and state.boot is not None and state.boot.flavour == "bls":
        kept = (f"; changed (with backups): {', '.join(changed)}: kernels installed later and a later grub2-mkconfig "
                "get the arguments from them, the boot entries do not")
    elif changed:
        tools = " or ".join(plan.tools) or "update-grub"
        kept = (f"; changed (with backups): {', '.join(changed)}: the next boot gets the arguments from them only "
                f"once {tools} regenerates its configuration")
    if nb.words is None:
        problems.append(f"cannot read back what the next boot gets ({nb.source}: {nb.problem}){kept}")
    elif kargs.wants_change(nb.words, want):
        pending = f" ({nb.pending})" if nb.pending else ""
        problems.append(f"the next boot will have {relevant(nb.words)}, not {' '.join(want)}: {nb.source} still "
                        f"disagrees{pending}{kept}; no reboot gives it the arguments")
    else:
        problems.append(f"the next boot has {' '.join(want)} ({nb.source}), but these still lack them: "
                        f"{', '.join(nb.others)}")
    return problems


def fix_boot(host, state, scope, dry_run: bool, which=None, root_which=None) -> Dict[str, Any]:
    """check --fix: plan, write, run the tool, read the next boot back. `which` and `root_which`
    find the tools (default: where the fix runs them, see _which and _which_in_root)."""
    from sriov_node.checks.fix import plan_fix
    from sriov_node.host.bootloader import apply_fix

    plan = plan_fix(state, scope, which or _which(state.live), root_which or _which_in_root(state.root))
    outcome = apply_fix(host, plan, dry_run=dry_run,
                        verify=lambda done: _verify(host, state, plan, done))
    return {
        "dry_run": dry_run,
        "needed": list(plan.needed),
        "summary": plan.summary or None,
        "changed": outcome.changed and not dry_run,
        "files": [{"path": c.path, "written": c.path in dict(outcome.written), "created": c.created,
                   "backup": dict(outcome.written).get(c.path), "diff": c.diff()} for c in plan.changes],
        "commands": outcome.commands,
        "problems": outcome.problems,
        "notes": list(plan.notes),
        "nothing_to_do": plan.empty and not plan.problems,
        "reboot_required": outcome.reboot_required,
    }


_MARK = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def _print(body: Dict[str, Any]) -> None:
    fix = body.get("fix")
    if fix is not None:
        for f in fix["files"]:
            backup = f" (backup {f['backup']})" if f["backup"] else ""
            if f["created"]:
                verb = "would create" if fix["dry_run"] else ("created" if f["written"] else "did not create")
            else:
                verb = "would change" if fix["dry_run"] else ("changed" if f["written"] else "did not change")
            typer.echo(f"fix: {verb} {f['path']}{backup}")
            if fix["dry_run"]:
                for line in f["diff"].splitlines():
                    typer.echo(f"    {line}")
        for c in fix["commands"]:
            if c["ran"]:
                typer.echo(f"fix: ran {c['command']}: exit {c['exit_code']}")
            else:
                said = c["why_not"] and any(c["why_not"] in p for p in fix["problems"])  # the error below says it
                typer.echo(f"fix: run {c['command']}" + (f"  ({c['why_not']})" if c["why_not"] and not said else ""))
        for note in fix["notes"]:
            typer.echo(f"fix: {note}")
        if fix["nothing_to_do"]:
            typer.echo("fix: nothing to change: the next boot already has " + (" ".join(fix["needed"]) or "what it needs"))
        for problem in fix["problems"]:
            typer.echo(f"error: {problem}", err=True)
        if fix["reboot_required"]:
            typer.echo(f"fix: reboot required (not rebooting): {fix['reboot_required']}")
        rdma = fix.get("rdma_netns")
        if rdma:
            for note in rdma["notes"]:
                typer.echo(f"fix: {note}")
            for problem in rdma["problems"]:
                typer.echo(f"error: {problem}", err=True)
            if rdma["reboot_required"]:
                typer.echo(f"fix: reboot required (not rebooting): {rdma['reboot_required']}")
    if body["assumed"]:
        typer.echo(f"note: {body['assumed']}", err=True)
    width = max([len(r["id"]) + (len(r["subject"]) + 1 if r["subject"] else 0) for r in body["checks"]] + [10])
    for r in body["checks"]:
        name = r["id"] + (f" {r['subject']}" if r["subject"] else "")
        typer.echo(f"{_MARK[r['status']]:<5} {name:<{width}}  {r['seen']}")
        if r["fix"] and r["status"] != "ok":
            typer.echo(f"{'':<5} {'':<{width}}  fix: {r['fix']}")
    c = body["counts"]
    typer.echo(f"{c['ok']} ok, {c['warn']} warn, {c['fail']} fail, {c['skip']} skip")
