"""Runs INSIDE the kernel-lab guest, as root: what Linux 6.1 shows for switchdev representor names
(netdevsim, with systemd's udevd running) and for ib_core's network namespace mode (a soft-RoCE
`rdma_rxe` device over a netdevsim netdev). sriov-node is run as a user runs it; the outcome is read
with iproute2 (`ip -j -d link`, `rdma system show`), `devlink` and `udevadm`, not through sriov_node.
Prints one line `@@RESULTS <json>` for tests/lab/test_representor_lab.py and
tests/lab/test_rdma_netns_lab.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest import BIN, configure, read, sh  # noqa: E402  (tests/lab/guest.py, run from the same folder)

RULES = "/etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules"  # the name the docs give it
results: Dict[str, Any] = {}


def nsim_netdevs(dev: str) -> List[str]:
    path = f"/sys/bus/netdevsim/devices/{dev}/net"
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def nsim_pf(dev: str) -> Optional[str]:
    """The device's port netdev (not a representor: no pfMvfN phys_port_name), read from sysfs."""
    for name in nsim_netdevs(dev):
        if not read(f"/sys/class/net/{name}/phys_port_name").startswith("pf"):
            return name
    return None


def links(devices: List[str]) -> List[Dict[str, Any]]:
    """Every netdev of these netdevsim devices: name, phys_port_name, parent (ip -j -d link)."""
    out = sh("ip -j -d link show")
    try:
        rows = json.loads(out["stdout"])
    except ValueError:
        return [{"error": out}]
    mine = []
    for row in rows:
        name = row.get("ifname")
        parent = row.get("parentdev") or (os.path.basename(os.path.realpath(f"/sys/class/net/{name}/device"))
                                          if os.path.exists(f"/sys/class/net/{name}/device") else None)
        if parent in devices:
            mine.append({"ifname": name, "phys_port_name": row.get("phys_port_name"), "parent": parent,
                         "ifindex": row.get("ifindex")})
    return mine


def udev_props(name: str) -> Dict[str, str]:
    out = sh(f"udevadm info -q property /sys/class/net/{name}")["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def apply_json(trace: Optional[str] = None) -> Dict[str, Any]:
    prefix = f"strace -f -qq -e trace=execve -o {trace} " if trace else ""
    out = sh(f"{prefix}{BIN} apply --json", timeout=240)
    try:
        out["body"] = json.loads(out["stdout"])
    except ValueError:
        out["body"] = None
    if trace:
        out["rdma_execs"] = [ln for ln in read(trace).splitlines() if 'execve("' in ln and "/rdma\"" in ln]
    return out


# ------------------------------------------------------------------------------- representors (systemd)

def scenario_representors() -> None:
    results["udevd"] = sh("systemctl is-active systemd-udevd.service")["stdout"].strip()
    results["setup"] = sh("modprobe netdevsim && echo '10 1' > /sys/bus/netdevsim/new_device && "
                          "echo '11 1' > /sys/bus/netdevsim/new_device && udevadm settle -t 60")
    pf10, pf11 = nsim_pf("netdevsim10"), nsim_pf("netdevsim11")
    results["pfs_before"] = [pf10, pf11]
    results["links_before"] = links(["netdevsim10", "netdevsim11"])
    configure(f'[[pf]]\nname = "{pf10}"\nnum_vfs = 4\neswitch_mode = "switchdev"\n\n'
              f'[[pf]]\nname = "{pf11}"\nnum_vfs = 2\neswitch_mode = "switchdev"\nrepresentor_name = "dev{{vf}}"\n')
    rule = sh(f"{BIN} udev-rule")
    results["rule"] = rule
    if rule["rc"] == 0:
        with open(RULES, "w") as fh:
            fh.write(rule["stdout"])
        results["reload"] = sh("udevadm control --reload")
    results["apply"] = apply_json()
    results["settle"] = sh("udevadm settle -t 60")
    results["eswitch"] = {dev: sh(f"devlink -j dev eswitch show netdevsim/{dev}")["stdout"]
                          for dev in ("netdevsim10", "netdevsim11")}
    after = links(["netdevsim10", "netdevsim11"])
    results["links_after"] = after
    results["props"] = {row["ifname"]: udev_props(row["ifname"]) for row in after if row.get("ifname")}
    results["pfs_after"] = [nsim_pf("netdevsim10"), nsim_pf("netdevsim11")]
    results["apply_again"] = apply_json()
    results["rule_after"] = sh(f"{BIN} udev-rule")  # printed again once the representors exist
    results["status"] = sh(f"{BIN} status --json", timeout=120)
    results["journal_udev"] = sh("journalctl -b -u systemd-udevd.service -o cat --no-pager")["stdout"][-4000:]


# ------------------------------------------------------------------------------- RDMA netns mode (shell)

def system_show() -> Dict[str, Any]:
    """`rdma system show`, and the mode it names."""
    out = sh("rdma system show")
    match = re.search(r"netns (\w+)", out["stdout"])
    out["mode"] = match.group(1) if match else None
    out["param"] = read("/sys/module/ib_core/parameters/netns_mode")
    return out


def scenario_rdma() -> None:
    results["modinfo"] = sh("modinfo -F filename rdma_rxe")
    results["setup"] = sh("modprobe netdevsim && echo '10 1' > /sys/bus/netdevsim/new_device && modprobe rdma_rxe")
    time.sleep(0.5)
    ifname = nsim_pf("netdevsim10") or "missing"
    results["ifname"] = ifname
    results["link_add"] = sh(f"ip link set {ifname} up && rdma link add rxe0 type rxe netdev {ifname}")
    results["rdma_link"] = sh("rdma link show")
    results["show_before"] = system_show()
    pf = f'[[pf]]\nname = "{ifname}"\nnum_vfs = 2\n'

    configure(f'rdma_netns = "exclusive"\n\n{pf}')
    results["apply_set"] = apply_json("/tmp/trace-set.log")
    results["show_set"] = system_show()
    results["option"] = read("/etc/modprobe.d/sriov-node-rdma.conf")
    results["apply_again"] = apply_json("/tmp/trace-again.log")
    results["show_again"] = system_show()

    # another network namespace: the kernel refuses a change (rdma_compatdev_set: EBUSY)
    results["netns_add"] = sh("ip netns add x")
    configure(f'rdma_netns = "shared"\n\n{pf}')
    results["apply_busy"] = apply_json("/tmp/trace-busy.log")
    results["show_busy"] = system_show()
    results["raw_busy"] = sh("rdma system set netns shared")  # the kernel's own answer, without sriov-node
    results["reboot_required"] = read("/run/sriov-node/reboot-required")
    results["record"] = read("/var/lib/sriov-node/rdma-netns.json")
    results["option_busy"] = read("/etc/modprobe.d/sriov-node-rdma.conf")
    results["apply_busy_again"] = apply_json("/tmp/trace-busy-again.log")
    results["show_busy_again"] = system_show()
    results["status"] = sh(f"{BIN} status --json", timeout=120)
    results["check"] = sh(f"{BIN} check --json", timeout=120)


if __name__ == "__main__":
    start = time.monotonic()
    {"representors": scenario_representors, "rdma": scenario_rdma}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
