"""The RDMA namespace mode (`rdma_netns`, ib_core's netns_mode) brought to what the config says, by
`apply` and `check --fix` alike: read first, change only what differs (checks/rdma.py judges,
host/rdma.py reads and writes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.host import Host


def converge_rdma_netns(host: "Host", wanted: str, dry_run: bool) -> Dict[str, Any]:
    """check --fix for rdma_netns: read first, change only what differs. The modprobe.d option first (the
    mode survives a reboot either way), then `rdma system set netns` when the running ib_core differs;
    refused (another network namespace: EBUSY), the mode is left for the next boot, recorded with this
    boot's id and noted in /run/sriov-node/reboot-required. A recorded mode a reboot did not give is named
    and not tried again."""
    from sriov_node.checks import rdma as judge
    from sriov_node.errors import SriovNodeError, describe_os_error
    from sriov_node.files import UnsafeFile
    from sriov_node.host import rdma
    from sriov_node.platform import RDMA_MODPROBE_FILE

    state = rdma.observe_rdma_netns(host, wanted)
    action = judge.decide(state)
    out: Dict[str, Any] = {"wanted": wanted, "before": state.now, "after": state.now, "action": action,
                           "changed": False, "problems": [], "notes": [], "reboot_required": None}
    if action == judge.FAILED:
        out["problems"].append(judge.failure_words(state))
        if not dry_run and not (state.pending or {}).get("failed"):
            try:
                rdma.write_record(host, dict(state.pending or {}, failed=True))
            except (OSError, UnsafeFile) as exc:
                out["problems"].append(f"the record: {describe_os_error(exc)}")
        return out
    if action == judge.NOTHING:
        if state.pending and not dry_run:  # the boot gave ib_core the mode: the record has done its work
            why = rdma.clear_record_quietly(host)
            if why:
                out["problems"].append(why)
        return out
    if action == judge.PENDING:
        out["notes"].append(f"rdma_netns: {state.now} until the next boot, which gives ib_core {wanted} "
                            "(reboot required, recorded before)")
        return out
    option = f"{RDMA_MODPROBE_FILE} (options ib_core netns_mode={1 if wanted == 'shared' else 0})"
    if dry_run:
        out["notes"].append(f"rdma_netns: would write {option}" if state.next_load != wanted else
                            f"rdma_netns: {RDMA_MODPROBE_FILE} already gives ib_core's next load {wanted}")
        if action == judge.RUNTIME:
            out["notes"].append(f"rdma_netns: would run rdma system set netns {wanted} (ib_core is {state.now}; "
                                "refused while another network namespace exists: then a reboot)")
        return out
    try:
        if rdma.write_option(host, wanted):
            out["changed"] = True
            out["notes"].append(f"rdma_netns: wrote {option}")
    except (OSError, SriovNodeError) as exc:
        out["problems"].append(f"rdma_netns: {RDMA_MODPROBE_FILE} not written: "
                               f"{describe_os_error(exc) if isinstance(exc, OSError) else exc}")
        return out
    next_load, source = rdma.read_next_load(host)
    if next_load != wanted:
        out["problems"].append(f"rdma_netns: {source or 'modprobe.d'} gives ib_core netns_mode for {next_load} after "
                               f"{RDMA_MODPROBE_FILE}; remove that option (modprobe takes the last one)")
        return out
    if action == judge.PERSIST:
        if state.now is None:
            out["notes"].append(f"rdma_netns: ib_core is not loaded; it loads {wanted}")
        return out
    said = rdma.set_now(host, wanted)
    now = rdma.read_now(host)
    out["after"] = now
    if now == wanted:
        out["changed"] = True
        out["notes"].append(f"rdma_netns: ran rdma system set netns {wanted}: ib_core is {wanted} (read back)")
        why = rdma.clear_record_quietly(host) if state.pending else None
        if why:
            out["problems"].append(why)
        return out
    text = (f"{rdma.stamp()}: sriov-node (rdma_netns): ib_core stays {now} until the next boot, "
            f"which loads it {wanted} ({RDMA_MODPROBE_FILE}); rdma system set netns {wanted}: "
            f"{said or 'no change read back'}; reboot to use it")
    try:
        rdma.write_record(host, {"wanted": wanted, "boot_id": state.boot_id, "time": rdma.stamp()})
        rdma.note_reboot(host, text)
    except (OSError, UnsafeFile) as exc:
        out["problems"].append(f"rdma_netns: {describe_os_error(exc)}")
        return out
    out["reboot_required"] = text
    return out
