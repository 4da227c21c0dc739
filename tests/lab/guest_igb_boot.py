"""Runs INSIDE the kernel-lab guest booted with systemd as PID 1 (LAB_INIT=systemd) and two Intel 82576
PFs (LAB_IGB=2), after the boot, with sriov-node installed by tests/lab/boot_install.sh. udevd ran the
coldplug: it loaded igb and igbvf and renamed the netdevs (enp3s0, enp3s0v0, ...). Reads what the kernel,
udev and systemd show, independently of sriov_node; then reloads the PF driver (`modprobe -r igb &&
modprobe igb`) and waits for the agent to put the VFs and their settings back. Prints one line
`@@RESULTS <json>` for tests/lab/test_igb_systemd_lab.py. Steps never raise: a failed step is recorded.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, List

from guest import kernel_view, link, read, sh  # tests/lab/guest.py, beside this script

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from tests import deviceplugin  # noqa: E402  the reference matcher of the plugin's discovery and selectors

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
SYS = "/sys/bus/pci/devices"
PF1, PF2 = "0000:03:00.0", "0000:04:00.0"  # scripts/kernel-lab LAB_IGB=2
PLUGIN = "/run/sriov-node/device-plugin/config.json"
results: Dict[str, Any] = {}


def show(unit: str, *props: str) -> Dict[str, str]:
    out = sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def netdev(pci: str) -> Any:
    try:
        names = sorted(os.listdir(f"{SYS}/{pci}/net"))
    except OSError:
        return None
    return names[0] if names else None


def view(pf: str) -> Dict[str, Any]:
    """kernel_view plus the PF's netdev and each VF's netdev name (after udev's renames)."""
    v = kernel_view(pf)
    v["name"] = netdev(pf)
    for vf in v["vfs"]:
        vf["netdev"] = netdev(vf["pci"])
    return v


def ip_vfs(dev: Any) -> Any:
    """The PF's VFs as iproute2 reads them from the kernel (`ip -d -j link show`)."""
    out = sh(f"ip -d -j link show dev {dev}")
    try:
        return json.loads(out["stdout"])[0].get("vfinfo_list", [])
    except (ValueError, IndexError, KeyError):
        return {"error": out}


def udev_props(dev: Any) -> Dict[str, str]:
    out = sh(f"udevadm info -q property -p /sys/class/net/{dev}")["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def nm_unmanaged(v: Dict[str, Any]) -> Dict[str, Any]:
    """NM_UNMANAGED / SRIOV_NODE_VF as udev's database holds them, per VF netdev and for the PF."""
    out = {}
    for dev in [v["name"]] + [vf["netdev"] for vf in v["vfs"]]:
        props = udev_props(dev)
        out[str(dev)] = {k: props.get(k) for k in ("NM_UNMANAGED", "SRIOV_NODE_VF", "ID_NET_NAME_PATH", "INTERFACE")}
    return out


def plugin_pools() -> Any:
    """What the device plugin's discovery and selectors make of the file the agent wrote, on this kernel's sysfs."""
    text = read(PLUGIN)
    try:
        return {"config": json.loads(text), "pools": deviceplugin.match(text, deviceplugin.devices("/"))}
    except (ValueError, AssertionError, KeyError, TypeError) as exc:
        return {"error": f"{exc!r}", "text": text}


def agent_runs() -> int:
    out = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager | grep -c 'run [0-9]*:'")["stdout"].strip()
    return int(out) if out.isdigit() else -1


def snapshot(tag: str) -> None:
    v1, v2 = view(PF1), view(PF2)
    results[tag] = {
        "pf1": v1, "pf2": v2,
        "ip1": ip_vfs(v1["name"]), "ip2": ip_vfs(v2["name"]),
        "udev": {**nm_unmanaged(v1), **nm_unmanaged(v2)},
        "status": sh(f"{BIN} status --json"),
        "status_rc": sh(f"{BIN} status --exit-code")["rc"],
        "plugin": plugin_pools(),
    }


def settled(expected: List[int]) -> bool:
    """Both PFs back with their VF counts, every VF on igbvf with its final (udev-renamed) netdev."""
    for pf, count in zip((PF1, PF2), expected):
        v = view(pf)
        if not v["name"] or not v["name"].startswith("enp") or len(v["vfs"]) != count:
            return False
        if any(vf["driver"] != "igbvf" or not (vf["netdev"] or "").startswith(v["name"] + "v") for vf in v["vfs"]):
            return False
    return True


def scenario_boot() -> None:
    results["system"] = sh("systemctl is-system-running")["stdout"].strip()
    results["failed"] = sh("systemctl --failed --plain --no-legend")["stdout"]
    results["oneshot"] = show("sriov-node.service", "ActiveState", "Result", "ExecMainStatus")
    results["agent"] = show("sriov-node-agent.service", "ActiveState", "SubState", "StatusText", "NRestarts")
    results["at_network_pre"] = read("/run/vfs-at-network-pre")
    results["modules"] = {m: os.path.isdir(f"/sys/module/{m}") for m in ("igb", "igbvf")}
    results["rule"] = os.path.exists("/etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules")
    snapshot("booted")
    results["journal"] = sh("journalctl -b -u sriov-node.service -o cat --no-pager")["stdout"][-6000:]
    if results["agent"].get("ActiveState") != "active":
        results["agent_journal"] = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager")["stdout"][-8000:]
        return
    # the PF driver goes and comes back: igb's remove disables SR-IOV (the VFs go with it), and a new
    # probe starts with none (max_vfs=0); the agent must make them anew, with their drivers and settings
    counts = [len(results["booted"]["pf1"]["vfs"]), len(results["booted"]["pf2"]["vfs"])]
    runs_before = agent_runs()
    results["rmmod"] = sh("modprobe -r igb", timeout=180)
    results["after_rmmod"] = {"pf_drivers": [link(f"{SYS}/{PF1}/driver"), link(f"{SYS}/{PF2}/driver")],
                              "vfs": [len(kernel_view(PF1)["vfs"]), len(kernel_view(PF2)["vfs"])]}
    start = time.monotonic()
    results["modprobe"] = sh("modprobe igb", timeout=180)
    deadline = start + 180
    while time.monotonic() < deadline and not settled(counts):
        time.sleep(0.2)
    results["restored_seconds"] = round(time.monotonic() - start, 2)
    results["restored"] = settled(counts)
    # the agent's verdict after the VFs are back: wait for its runs to end (a converged status)
    while time.monotonic() < deadline and sh(f"{BIN} status --exit-code")["rc"] != 0:
        time.sleep(0.5)
    results["converged_seconds"] = round(time.monotonic() - start, 2)
    time.sleep(1)
    results["agent_runs"] = [runs_before, agent_runs()]
    snapshot("reloaded")
    results["agent_after"] = show("sriov-node-agent.service", "ActiveState", "SubState", "StatusText", "NRestarts")
    results["agent_journal"] = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager")["stdout"][-8000:]


if __name__ == "__main__":
    begin = time.monotonic()
    {"igb-boot": scenario_boot}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - begin, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
