"""The RDMA namespace mode (`rdma_netns`): judged from what `host/rdma.py` read, and what `check --fix`
does about it. Pure.

Never a reboot loop: a mode given to the next boot (the running one could not change: another network
namespace exists) is recorded with the boot's id; when a later boot still has the other mode, that is a
failure named once and not tried again (the record stays, with `failed`), until the operator removes
the record or the config asks for another mode.
"""

from __future__ import annotations

from typing import Optional

from sriov_node.checks.diagnose import FAIL, OK, WARN, CheckResult
from sriov_node.platform import RDMA_MODPROBE_FILE, RDMA_NETNS_RECORD, RdmaNetnsState

CHECK_ID = "rdma_netns"
FIX = "sriov-node check --fix"

# what check --fix does
NOTHING, PERSIST, RUNTIME, FAILED, PENDING = "nothing", "persist", "runtime", "failed", "pending"


def _sticks(state: RdmaNetnsState) -> bool:
    return state.next_load == state.wanted


def failed_after_reboot(state: RdmaNetnsState) -> bool:
    """A mode left for the next boot that the boot did not give ib_core."""
    p = state.pending
    return (bool(p) and p.get("wanted") == state.wanted and state.now is not None and state.now != state.wanted
            and (bool(p.get("failed")) or state.rebooted_since))


def decide(state: RdmaNetnsState) -> str:
    """What check --fix does: nothing, persist (the option only), runtime (the option, then rdma system
    set), failed (named, not retried), pending (the reboot asked for has not happened)."""
    if state.wanted is None:
        return NOTHING
    if failed_after_reboot(state):
        return FAILED
    if state.now is None or state.now == state.wanted:
        return NOTHING if _sticks(state) else PERSIST
    p = state.pending
    if p and p.get("wanted") == state.wanted and not state.rebooted_since and _sticks(state):
        return PENDING
    return RUNTIME


def failure_words(state: RdmaNetnsState) -> str:
    p = state.pending or {}
    return (f"ib_core is {state.now} after the reboot, though {p.get('time', 'an earlier boot')} gave its next "
            f"load netns_mode for {state.wanted} ({RDMA_MODPROBE_FILE}); the option did not take effect (ib_core "
            f"loaded from an initramfs made before it? run update-initramfs -u or dracut -f); not tried again: "
            f"remove {RDMA_NETNS_RECORD} once the cause is fixed, then run {FIX}")


def check_rdma_netns(state: RdmaNetnsState) -> Optional[CheckResult]:
    """The `rdma_netns` check; None when the config does not name a mode."""
    if state.wanted is None:
        return None
    wanted = state.wanted
    where = f" ({state.option_file})" if state.option_file else " (no option: the module's default)"
    if failed_after_reboot(state):
        return CheckResult(CHECK_ID, FAIL, failure_words(state), f"remove {RDMA_NETNS_RECORD}, then {FIX}",
                           subject="ib_core")
    if state.now is None:
        seen = f"ib_core is not loaded; it loads {state.next_load}{where}"
        return CheckResult(CHECK_ID, OK if _sticks(state) else WARN, seen, None if _sticks(state) else FIX,
                           subject="ib_core")
    if state.now == wanted:
        if _sticks(state):
            return CheckResult(CHECK_ID, OK, f"{wanted}, and so at the next boot{where}", subject="ib_core")
        return CheckResult(CHECK_ID, WARN, f"{wanted} now, but the next boot gives ib_core {state.next_load}{where}",
                           f"{FIX} (writes {RDMA_MODPROBE_FILE})", subject="ib_core")
    if decide(state) == PENDING:
        return CheckResult(CHECK_ID, WARN, f"{state.now} now; reboot required: the next boot gives ib_core "
                                           f"{wanted}{where} (set by {FIX} at {state.pending.get('time')}: "
                                           "another network namespace kept the running kernel from changing)",
                           "reboot", subject="ib_core")
    return CheckResult(CHECK_ID, FAIL, f"{state.now}, the config wants {wanted}; pods that move RDMA devices "
                                       "into their network namespace need exclusive mode before they start",
                       f"{FIX} (rdma system set netns {wanted}, else {RDMA_MODPROBE_FILE} and a reboot)",
                       subject="ib_core")
