"""Runs INSIDE the kernel-lab guest, as root: every eswitch transition on Linux 6.1's netdevsim.

netdevsim puts its eswitch back to legacy when its VFs go to 0 (nsim_drv_configure_vfs ->
nsim_esw_legacy_enable), so a count change through 0 must be followed by the mode. Each
transition is one `sriov-node apply`, read back with sysfs and `devlink` (not sriov_node), then
a second apply that must write nothing. Prints one line `@@RESULTS <json>` for
tests/lab/test_netdevsim_lab.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest import BIN, configure, read, sh  # noqa: E402  (tests/lab/guest.py, run from the same folder)

NSIM = "netdevsim10"
DEVICE = f"/sys/bus/netdevsim/devices/{NSIM}"
START = (4, "legacy")
# (count, mode) reached one after the other from START: legacy<->switchdev with and without a
# count change, the count down, up, to 0 and from 0
CHAIN: List[Tuple[int, str]] = [
    (2, "switchdev"),  # down + mode: the case seen lost to legacy
    (4, "switchdev"),  # up, the mode unchanged (reset by the disable in between)
    (4, "legacy"),     # the mode alone
    (4, "switchdev"),  # the mode alone
    (2, "legacy"),     # down + mode back
    (0, "switchdev"),  # to 0 + mode
    (3, "switchdev"),  # up from 0: no disable
    (1, "switchdev"),  # down, the mode unchanged
]


def kernel_view() -> Dict[str, Any]:
    out = sh(f"devlink -j dev eswitch show netdevsim/{NSIM}")
    try:
        mode = list(json.loads(out["stdout"])["dev"].values())[0]["mode"]
    except (ValueError, KeyError, IndexError):
        mode = {"error": out}
    return {"count": read(f"{DEVICE}/sriov_numvfs"), "mode": mode}


def apply() -> Dict[str, Any]:
    out = sh(f"{BIN} apply --json", timeout=180)
    try:
        body = json.loads(out["stdout"])
        pf = body["pfs"][0]
        return {"rc": out["rc"], "writes": body.get("writes"), "error": pf.get("error"),
                "actions": [(a["op"], a.get("value")) for a in pf.get("actions", [])], "seconds": out["seconds"]}
    except (ValueError, KeyError, IndexError):
        return {"rc": out["rc"], "raw": out}


def main() -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    results["setup"] = sh(f"modprobe netdevsim && echo '10 1' > /sys/bus/netdevsim/new_device && "
                          f"echo 8 > /sys/kernel/debug/netdevsim/{NSIM}/max_vfs")
    time.sleep(0.5)
    nets = os.listdir(f"{DEVICE}/net") if os.path.isdir(f"{DEVICE}/net") else []
    ifname = nets[0] if nets else "missing"
    # the kernel's own rule, without sriov_node: a disable in switchdev ends in legacy
    results["raw_disable"] = sh(f"echo 2 > {DEVICE}/sriov_numvfs && devlink dev eswitch set netdevsim/{NSIM} "
                                f"mode switchdev && echo 0 > {DEVICE}/sriov_numvfs")
    results["raw_disable"]["after"] = kernel_view()
    sh(f"devlink dev eswitch set netdevsim/{NSIM} mode legacy")
    steps = []
    previous = None
    for count, mode in [START] + CHAIN:
        configure(f'[[pf]]\nname = "{ifname}"\nnum_vfs = {count}\neswitch_mode = "{mode}"\n')
        first = apply()
        seen = kernel_view()
        again = apply()
        steps.append({"from": previous, "to": [count, mode], "apply": first, "kernel": seen, "again": again,
                      "kernel_again": kernel_view()})
        previous = [count, mode]
    results["steps"] = steps
    return results


if __name__ == "__main__":
    start = time.monotonic()
    res = main()
    res["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(res), flush=True)
