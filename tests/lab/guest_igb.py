"""Runs INSIDE the kernel-lab guest (LAB_IGB=2: two Intel 82576 PFs under QEMU's igb), as root.

One boot answers every igb question of tests/lab/test_igb_lab.py: the installed `sriov-node` is
driven through its CLI, and the kernel's answers are read back without it (sysfs, `ip -d -j link`,
strace of the agent's own writes). It prints one line `@@RESULTS <json>`. Steps never raise: a
failed step is recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

from guest import kernel_view, read, sh, wait_pf_driver  # tests/lab/guest.py, beside this script

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
SYS = "/sys/bus/pci/devices"
PF1, PF2 = "0000:03:00.0", "0000:04:00.0"  # scripts/kernel-lab LAB_IGB=2
MAC1 = "52:54:00:5f:00:01"  # PF1's permanent MAC (the -device igb,mac=)
CONFIG = "/etc/sriov-node/config.toml"
results: Dict[str, Any] = {}


def step(name: str, cmd: str, **kw: Any) -> Dict[str, Any]:
    results[name] = sh(cmd, **kw)
    return results[name]


def configure(text: str) -> None:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w") as fh:
        fh.write(text)
    os.chmod(CONFIG, 0o644)


def ifname(pci: str) -> str:
    try:
        return os.listdir(f"{SYS}/{pci}/net")[0]
    except (OSError, IndexError):
        return "missing"


def ip_vfs(dev: str) -> Any:
    """The PF's VFs as iproute2 reads them from the kernel (`ip -d -j link show`)."""
    out = sh(f"ip -d -j link show dev {dev}")
    try:
        return json.loads(out["stdout"])[0].get("vfinfo_list", [])
    except (ValueError, IndexError, KeyError):
        return {"error": out}


def view(pci: str) -> Dict[str, Any]:
    """kernel_view plus each VF's netdev and its MAC, read from sysfs."""
    v = kernel_view(pci)
    for vf in v["vfs"]:
        nets = os.listdir(f"{SYS}/{vf['pci']}/net") if os.path.isdir(f"{SYS}/{vf['pci']}/net") else []
        vf["netdev"] = nets[0] if nets else None
        vf["address"] = read(f"{SYS}/{vf['pci']}/net/{nets[0]}/address") if nets else None
        vf["device"] = read(f"{SYS}/{vf['pci']}/device")
    return v


def traced(name: str, cmd: str, timeout: float = 300) -> Dict[str, Any]:
    """Run `cmd` (a sriov-node command) under strace: every sysfs write and netlink set it made."""
    log = f"/tmp/strace-{name}.log"
    r = step(name, f"strace -f -y -s 256 -e trace=openat,write,sendto,sendmsg -o {log} {cmd}", timeout=timeout)
    lines = read(log).splitlines() if os.path.exists(log) else []
    r["sysfs_writes"] = [l for l in lines if "openat(" in l and "/sys/" in l and ("O_WRONLY" in l or "O_RDWR" in l)
                         and "= -1" not in l]
    r["netlink_sets"] = [l[:300] for l in lines if ("RTM_SETLINK" in l or "RTM_NEWLINK" in l)
                         and ("sendto(" in l or "sendmsg(" in l)]
    r["numvfs_writes"] = {pci: [l.split("write(", 1)[1][:120] for l in lines
                                if "write(" in l and f"{pci}/sriov_numvfs>" in l] for pci in (PF1, PF2)}
    return r


def wait_carrier(dev: str, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if read(f"/sys/class/net/{dev}/carrier") == "1":
            return True
        time.sleep(0.2)
    return False


def pf(selector: str, num: int, *groups: str, extra: str = "") -> str:
    text = f"[[pf]]\n{selector}\nnum_vfs = {num}\n{extra}"
    for g in groups:
        text += "  [[pf.vfs]]\n" + "".join(f"  {line}\n" for line in g.strip().splitlines())
    return text


SETTINGS_VF0 = '''range = "0"
mac = "02:00:00:00:aa:00"
vlan = 100
qos = 3
spoofchk = false
trust = true
max_tx_rate = 100'''
SETTINGS_VF1 = '''range = "1"
vlan = 200
spoofchk = true
trust = false
max_tx_rate = 500'''
VFIO_23 = '''range = "2-3"
driver = "vfio-pci"'''


def scenario_igb() -> None:
    results["setup"] = sh("modprobe igb")
    results["pf_drivers"] = [wait_pf_driver(PF1), wait_pf_driver(PF2)]
    time.sleep(0.5)
    dev1, dev2 = results["ifnames"] = [ifname(PF1), ifname(PF2)]
    results["pf"] = {"totalvfs": read(f"{SYS}/{PF1}/sriov_totalvfs"), "device": read(f"{SYS}/{PF1}/device"),
                     "perm": sh(f"ethtool -P {dev1}")["stdout"].strip()}
    results["igbvf_loaded_before"] = os.path.isdir("/sys/module/igbvf")

    # selectors and counts: 0 -> 4 by name (the default VF driver loaded by the agent), 4 -> 2 by pci
    # (through 0), 2 -> 0 by permanent MAC
    configure(pf(f'name = "{dev1}"', 4))
    traced("by_name", f"{BIN} apply --json")
    results["by_name"]["kernel"] = view(PF1)
    results["igbvf_loaded_after"] = os.path.isdir("/sys/module/igbvf")
    traced("by_name_again", f"{BIN} apply --json")  # the VFs now exist: a re-run probes them
    results["by_name_again"]["kernel"] = view(PF1)
    results["igbvf_loaded_again"] = os.path.isdir("/sys/module/igbvf")
    step("raw_resize", f"""python3 -c 'import os; fd = os.open("{SYS}/{PF1}/sriov_numvfs", os.O_WRONLY); os.write(fd, b"2\\n")'""")
    configure(pf(f'pci = "{PF1}"', 2))
    traced("by_pci", f"{BIN} apply --json")
    results["by_pci"]["kernel"] = view(PF1)
    configure(pf(f'mac = "{MAC1}"', 0))
    traced("by_mac", f"{BIN} apply --json")
    results["by_mac"]["kernel"] = view(PF1)

    # drivers: VFs 0-1 on the default (igbvf), 2-3 on vfio-pci
    configure(pf(f'mac = "{MAC1}"', 4, VFIO_23))
    traced("drivers", f"{BIN} apply --json")
    results["drivers"]["kernel"] = view(PF1)

    # a VFIO user holding VF 3's group: shrinking the PF would pull it; the agent refuses
    group = (results["drivers"]["kernel"]["vfs"][3:4] or [{}])[0].get("group")
    holder = subprocess.Popen(["python3", "-c", f"import time; f = open('/dev/vfio/{group}', 'rb'); print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    results["holder"] = {"group": group, "ready": holder.stdout.readline().strip() if holder.stdout else ""}
    configure(pf(f'mac = "{MAC1}"', 2))
    traced("held", f"{BIN} apply --json")
    results["held"]["kernel"] = view(PF1)
    holder.kill()
    holder.wait()

    # every VF setting igb takes, with the PF up (max_tx_rate needs the link)
    step("pf_up", f"ip link set {dev1} up")
    results["pf_up"]["carrier"] = wait_carrier(dev1)
    settings = pf(f'name = "{dev1}"', 4, SETTINGS_VF0, SETTINGS_VF1, VFIO_23)
    configure(settings)
    traced("settings", f"{BIN} apply --json")
    results["settings"]["ip"] = ip_vfs(dev1)
    results["settings"]["kernel"] = view(PF1)
    step("ip_show", f"ip -d link show dev {dev1}")
    step("status", f"{BIN} status --exit-code")
    step("status_json", f"{BIN} status --json")
    traced("again", f"{BIN} apply --json")

    # capture, then apply the captured config: nothing to do
    step("capture", f"{BIN} capture -o /tmp/captured.toml")
    results["capture"]["text"] = read("/tmp/captured.toml")
    traced("captured_apply", f"{BIN} --config /tmp/captured.toml apply --json")

    # what igb refuses: named before any write by validate, apply --dry-run, and apply itself
    before = ip_vfs(dev1)
    refusals = {
        "min_tx_rate": SETTINGS_VF1 + "\nmin_tx_rate = 10",
        "vlan_proto": SETTINGS_VF1 + '\nvlan_proto = "802.1ad"',
        "link_state": SETTINGS_VF1 + '\nlink_state = "disable"',
    }
    results["refusals"] = {}
    for key, group1 in refusals.items():
        configure(pf(f'name = "{dev1}"', 4, SETTINGS_VF0, group1, VFIO_23))
        out = results["refusals"][key] = {}
        for what, cmd in (("validate", "validate --json"), ("dry_run", "apply --dry-run --json"), ("apply", "apply --json")):
            traced(f"refuse_{key}_{what}", f"{BIN} {cmd}")
            out[what] = results.pop(f"refuse_{key}_{what}")
        out["ip_after"] = ip_vfs(dev1)
    results["refusals_ip_before"] = before

    # max_tx_rate with the PF down: EINVAL in the kernel, refused before the write
    step("pf_down", f"ip link set {dev1} down")
    rate = pf(f'name = "{dev1}"', 4, SETTINGS_VF0.replace("max_tx_rate = 100", "max_tx_rate = 200"), SETTINGS_VF1, VFIO_23)
    configure(rate)
    out = results["rate_down"] = {}
    for what, cmd in (("validate", "validate --json"), ("dry_run", "apply --dry-run --json"), ("apply", "apply --json")):
        traced("rate_down_step", f"{BIN} {cmd}")
        out[what] = results.pop("rate_down_step")
    out["ip_after"] = ip_vfs(dev1)
    step("raw_rate_down", f"ip link set {dev1} vf 0 max_tx_rate 200")
    # the kernel's own answers to what the table refuses (iproute2, no sriov-node)
    step("pf_up_again", f"ip link set {dev1} up")
    results["pf_up_again"]["carrier"] = wait_carrier(dev1)
    results["raw"] = {
        "min_tx_rate": sh(f"ip link set {dev1} vf 1 min_tx_rate 10 max_tx_rate 500"),
        "vlan_proto": sh(f"ip link set {dev1} vf 1 vlan 200 proto 802.1ad"),
        "link_state": sh(f"ip link set {dev1} vf 1 state disable"),
        "rate_above_link": sh(f"ip link set {dev1} vf 1 max_tx_rate 1001"),
    }

    # two PFs: PF1 by name, PF2 by pci with all 7 VFs; converged, then nothing to do
    configure(pf(f'name = "{dev1}"', 3) + pf(f'pci = "{PF2}"', 7, 'range = "6"\ntrust = true\nvlan = 7', 'range = "0-1"\ndriver = "vfio-pci"'))
    traced("two", f"{BIN} apply --json")
    results["two"]["kernel"] = {"pf1": view(PF1), "pf2": view(PF2)}
    results["two"]["ip2"] = ip_vfs(dev2)
    step("two_status", f"{BIN} status --exit-code")
    traced("two_again", f"{BIN} apply --json")
    configure(pf(f'name = "{dev1}"', 0) + pf(f'pci = "{PF2}"', 0))
    traced("two_off", f"{BIN} apply --json")
    results["two_off"]["kernel"] = {"pf1": read(f"{SYS}/{PF1}/sriov_numvfs"), "pf2": read(f"{SYS}/{PF2}/sriov_numvfs")}


if __name__ == "__main__":
    start = time.monotonic()
    {"igb": scenario_igb}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
