"""`sriov-node status`: the observed state and, where a config exists, the comparison's findings."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sriov_node.engine.compare import remakes_vfs
from sriov_node.host import Host
from sriov_node.model import VF_LINK_ATTRS, DesiredState, describe_driver
from sriov_node.engine.survey import Survey, survey
from sriov_node.engine.state import read_state


def build_status(host: Host, desired: Optional[DesiredState],
                 restore: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Per PF and VF: what the kernel shows, what the config wants, and every difference. `restore`:
    what the applied generation still has to put back (`generation_status`): a value not put back yet
    is a difference too, as the next run sees it."""
    return render_status(host, survey(host, desired, detail=True, every_vf=True, restore=restore or None),
                         desired is not None)


def render_status(host: Host, seen_now: Survey, configured: bool) -> Dict[str, Any]:
    """The status document of a survey taken with `detail` and `every_vf` (plus the last run and
    whether a reboot is pending, read now)."""
    observed, resolution = seen_now.heads, seen_now.resolution if configured else None
    judged = seen_now.judged_by_pci() if configured else {}
    failed_pfs = {f.pf: f for f in resolution.failures if f.pf} if resolution else {}
    pfs = []
    # alternative names cost a netlink read (pyroute2): shown when a block selects by one
    altnames = bool(resolution) and any(t.spec.selector.altname is not None for t in resolution.targets)
    for seen in observed.pfs:
        judgement = judged.get(seen.pci)
        target = judgement.target if judgement else None
        pf = target.pf if target else seen
        findings, caveats, held = (judgement.findings, judgement.unjudged, judgement.held) if judgement else ((), (), ())
        unjudged = {f.vf: f.describe(where_too=False) for f in caveats}
        held_by: Dict[Optional[int], str] = {f.vf: f.held_by or "" for f in held}
        held_vf: Dict[Optional[int], List[str]] = {}
        for f in held:
            held_vf.setdefault(f.vf, []).append(f.describe(where_too=False))
        by_vf: Dict[Optional[int], List[str]] = {}
        for f in findings:
            by_vf.setdefault(f.vf, []).append(f.describe(where_too=False))
        # A count that differs (or VFs missing behind it) is fixed by making every VF anew: the
        # comparison says nothing of each VF then, and neither does status ("ok" would be a guess).
        remade = target is not None and remakes_vfs(target.spec, findings)
        vfs = []
        for vf in pf.vfs:
            managed = target is not None and vf.index < target.spec.num_vfs
            want = target.spec.vf(vf.index).driver if managed else None
            note = None
            if remade:
                note = "not compared: the next apply makes the VFs anew"
            elif target is not None and not managed:
                note = "beyond num_vfs: left as it is (externally managed)"
            elif vf.index in held_vf and not by_vf.get(vf.index):  # the holder's: neither "ok" nor a difference
                note = f"held ({held_by[vf.index]}): " + "; ".join(held_vf[vf.index])
            elif vf.index in unjudged and not by_vf.get(vf.index):
                note = f"not judged: {unjudged[vf.index]}"  # neither "ok" nor a difference
            vfs.append({
                "index": vf.index,
                "pci": vf.pci,
                "driver": vf.driver,
                "driver_override": vf.driver_override,
                "netdev": vf.netdevs[0] if vf.netdevs else None,
                "iommu_group": vf.iommu_group,
                "desired_driver": describe_driver(want) if managed else None,
                # the drivers the kernel's ID tables give it (modules.alias)
                # (for a VF meant for it), null otherwise or when not known here
                "default_drivers": list(pf.vf_default_drivers)
                if managed and want is None and pf.vf_default_drivers is not None else None,
                "settings": None if vf.links is None else {a: vf.links.observed(a) for a in VF_LINK_ATTRS},
                "desired_settings": target.spec.vf(vf.index).links.wanted() if managed else None,
                # InfiniBand VF GUIDs, as the kernel reports them (read when a block sets them)
                **({"guids": {"node_guid": vf.links.node_guid, "port_guid": vf.links.port_guid}}
                   if vf.links is not None and (vf.links.node_guid or vf.links.port_guid) else {}),
                "mtu": vf.mtu,
                "matches": None if note or not managed else not by_vf.get(vf.index),
                "findings": by_vf.get(vf.index, []),
                # settings that differ while the VF is in use: its holder's, left as they are
                "held": held_vf.get(vf.index, []),
                "held_by": held_by.get(vf.index),
                "note": note,
            })
        failure = failed_pfs.get(pf.pci)
        pfs.append({
            "pci": pf.pci,
            "name": pf.name,
            **({"altnames": list(observed.altnames(seen) or ())} if altnames else {}),
            "vendor": pf.vendor,
            "device": pf.device,
            "driver": pf.driver,
            "total_vfs": pf.total_vfs,
            "num_vfs": pf.num_vfs,
            "autoprobe": pf.autoprobe,
            "bus": pf.bus,
            "mtu": pf.mtu,
            "eswitch_mode": pf.eswitch_mode,
            # where the VFs' InfiniBand GUIDs were read back: netlink, MLNX_OFED's sysfs, or both (None: not read)
            "vf_guids_from": pf.vf_guids_from,
            "block": target.spec.key if target else (failure.key if failure else None),
            "desired_num_vfs": target.spec.num_vfs if target else None,
            "converged": None if target is None else not findings,
            "findings": [f.describe() for f in findings],
            "unjudged": [f.describe() for f in caveats],
            "held": [f"{f.describe()} (held: {f.held_by})" for f in held],
            "pf_findings": by_vf.get(None, []),
            "error": failure.render() if failure else None,
            "vfs": vfs,
        })
    state = read_state(host)
    reboot = host.sysfs.read("run/sriov-node", "reboot-required")
    return {
        "reboot_required": reboot,
        "pfs": pfs,
        "blocks": [f.to_dict() for f in resolution.failures] if resolution else [],
        "notices": list(resolution.notices) if resolution else [],
        "iommu_groups": observed.iommu_groups,
        "converged": seen_now.converged if configured else None,
        "last_apply": None if state is None else {
            k: state.get(k) for k in ("time", "result", "writes", "duration_seconds", "config")},
    }


def generation_status(host: Host, path: str) -> "tuple[Dict[str, Any], List[str]]":
    """What status compares the host with, and whether the config file is that.

    The host is compared with the applied generation (the newest one: what the node converges to);
    before the first apply, with the file. Returns ({"desired": DesiredState or None, "body": the
    JSON fields, with a generation "restore": what it still has to put back}, the text lines).
    """
    import hashlib
    import os
    import time

    from sriov_node import generations
    from sriov_node.errors import SriovNodeError
    from sriov_node.files import CONFIG_LIMIT, read_regular

    name = os.path.basename(path)
    body: Dict[str, Any] = {"applied_generation": None, "config_differs": None, "compared_with": None,
                            "checkpoint": None}
    lines: List[str] = []
    try:
        gen = generations.current(host)
        desired = generations.desired_of(gen, gen.config_path) if gen is not None else None
    except SriovNodeError as exc:
        body["generation_error"] = str(exc)
        lines.append(f"error: the applied generation cannot be read: {exc}")
        return {"desired": None, "body": body}, lines
    if gen is None:
        body["compared_with"] = {"file": path}
        if os.path.exists(path):
            lines.append(f"compared with {path}: no generation applied yet; run sriov-node apply")
        else:
            from sriov_node.config import EXAMPLES_DIR

            lines.append(f"{path} does not exist and no generation is applied yet: create it (examples: "
                         f"{EXAMPLES_DIR}), then run sriov-node apply")
        return {"desired": None, "body": body}, lines
    try:
        data: Optional[bytes] = read_regular(path, limit=CONFIG_LIMIT)
    except OSError:
        data = None
    body["applied_generation"] = gen.number
    restore = generations.undo_values(gen, desired) if desired is not None else {}
    body["config_differs"] = data is None or hashlib.sha256(data).hexdigest() != gen.sha256
    body["compared_with"] = {"generation": gen.number, "command": gen.command, "time": gen.time,
                             "outcome": gen.outcome, "sha256": gen.sha256, "config_path": gen.config_path}
    lines.append(f"compared with the applied generation {gen.number} ({gen.command}, "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(gen.time))}, {gen.outcome})")
    if data is None:
        lines.append(f"{name} cannot be read; the applied generation {gen.number} is what the node converges to")
    elif body["config_differs"]:
        lines.append(f"{name} differs from the applied generation {gen.number}: run sriov-node apply")
    view = checkpoint_view(gen)
    if view is not None:
        body["checkpoint"] = dict(gen.checkpoint or {}, generation=gen.number, overdue=view["overdue"])
        lines.append(f"checkpoint: generation {gen.number} is {view['words']}")
    return {"desired": desired, "body": body, "restore": restore}, lines


def checkpoint_view(gen: Any, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """A generation's pending checkpoint as status, history and metrics show it (None: none pending):
    {"overdue": its deadline passed and it is still pending (nobody restored it: no daemon ran at
    the deadline, its timer did not fire), "words": what happens next, or what to do ("restored to
    generation 6 at 12:14:00 unless ...", "overdue since 12:14:00: run ...")}."""
    import time

    if gen is None or not gen.pending:
        return None
    cp = gen.checkpoint
    deadline = float(cp["deadline"])
    at = time.strftime("%H:%M:%S", time.localtime(deadline))
    overdue = (time.time() if now is None else now) > deadline
    if overdue:
        words = (f"overdue since {at}: run sriov-node rollback --if-uncommitted {gen.number} to restore "
                 f"generation {cp['previous']} (sriov-node commit is refused past the deadline)")
    else:
        words = f"restored to generation {cp['previous']} at {at} unless sriov-node commit runs"
    return {"overdue": overdue, "deadline": deadline, "previous": cp["previous"], "words": words}
