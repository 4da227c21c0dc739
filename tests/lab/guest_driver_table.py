"""Runs INSIDE the kernel-lab guest (LAB_IGB=1), as root: sriov_node/drivers.py against the real drivers.

For every driver the lab has (igb: QEMU's 82576; netdevsim; nvme: QEMU's NVMe controller), every
refusal its row implies (`drivers.implied_refusals`, the same domain tests/test_driver_table.py
walks on the simulated kernel) is put to the real kernel twice:
- through sriov-node: `validate`, `apply --dry-run` and `apply`, each expected to refuse before any
  write (strace shows the writes `apply` made);
- raw, through the host layer's netlink/devlink calls (the errno is the kernel's own).
A case whose host fact the lab cannot make (a link speed it does not have) is recorded as skipped.
Prints one line `@@RESULTS <json>`; steps never raise.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from guest import read, sh, wait_pf_driver  # tests/lab/guest.py, beside this script

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from sriov_node import drivers  # noqa: E402  (the repository's, as installed in the venv)
from sriov_node.cli.root import open_root  # noqa: E402
from sriov_node.model import VfLinks, VF_SETTING_KEYS  # noqa: E402

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
SYS = "/sys/bus/pci/devices"
CONFIG = "/etc/sriov-node/config.toml"
IGB, NVME, NSIM = "0000:03:00.0", "0000:01:00.0", "netdevsim10"
results: Dict[str, Any] = {"cases": {}}


def configure(text: str) -> None:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w") as fh:
        fh.write(text)
    os.chmod(CONFIG, 0o644)


def netdev_of(path: str) -> Optional[str]:
    try:
        return sorted(os.listdir(f"{path}/net"))[0]
    except (OSError, IndexError):
        return None


def traced(cmd: str) -> Dict[str, Any]:
    log = "/tmp/strace-table.log"
    r = sh(f"strace -f -y -s 128 -e trace=openat,sendto,sendmsg -o {log} {cmd}", timeout=300)
    lines = read(log).splitlines() if os.path.exists(log) else []
    r["writes"] = [l[:200] for l in lines if ("openat(" in l and "/sys/" in l and ("O_WRONLY" in l or "O_RDWR" in l)
                                              and "= -1" not in l)
                   or (("sendto(" in l or "sendmsg(" in l) and ("RTM_SETLINK" in l or "DEVLINK_CMD_ESWITCH_SET" in l))]
    return r


def value(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


def config_for(selector: str, case: drivers.Case, num: int) -> str:
    lines = ["[[pf]]", selector, f"num_vfs = {num}"] + [f"{k} = {value(v)}" for k, v in case.pf.items()]
    if case.vf:
        lines += ["  [[pf.vfs]]", '  range = "0"'] + [f"  {k} = {value(v)}" for k, v in case.vf.items()]
    return "\n".join(lines) + "\n"


def raw(host: Any, where: Dict[str, str], case: drivers.Case) -> Dict[str, Any]:
    """The step itself, sent to the kernel through the host layer: its errno (None: accepted)."""
    try:
        if "eswitch_mode" in case.pf and not case.vf:
            host.devlink.set_eswitch_mode(where["devlink"], case.pf["eswitch_mode"])
        elif "mtu" in case.pf:
            host.links.set_mtu(where["ifname"], case.pf["mtu"])
        else:
            if "eswitch_mode" in case.pf:
                host.devlink.set_eswitch_mode(where["devlink"], case.pf["eswitch_mode"])
            links = VfLinks(**{k: v for k, v in case.vf.items() if k in VF_SETTING_KEYS})
            host.links.set_vf_links(where["ifname"], [(0, links.wanted())])
    except OSError as exc:
        name = "EOPNOTSUPP" if exc.errno == errno.EOPNOTSUPP else errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return {"errno": name, "text": str(exc)[:300]}  # ENOTSUP is EOPNOTSUPP on Linux
    except Exception as exc:  # noqa: BLE001 (recorded: the test says what went wrong)
        return {"errno": None, "error": repr(exc)[:300]}
    return {"errno": None}


def put_back(where: Dict[str, str], case: drivers.Case) -> None:
    """Undo what a raw step may have done (an accepted one would be a table error: still leave it clean)."""
    if "eswitch_mode" in case.pf:
        sh(f"devlink dev eswitch set {where['devlink']} mode legacy")
    if case.pf_down:
        sh(f"ip link set {where['ifname']} up")


def run_row(name: str, where: Dict[str, str], num: int) -> None:
    row = drivers.DRIVERS[name]
    host = open_root("/")
    speed = read(f"/sys/class/net/{where['ifname']}/speed") if where.get("ifname") else ""
    for case in drivers.implied_refusals(row):
        key = f"{name}-{case.label}"
        out: Dict[str, Any] = {"pf_id": where.get("pf_id"), "speed": speed}
        if case.link_speed is not None and str(case.link_speed) != speed:
            results["cases"][key] = {**out, "skipped": f"the lab's link speed is {speed}, the case needs {case.link_speed}"}
            continue
        if case.label == "rate_device" and where.get("pf_id", "").split(":")[-1] in {d.split(":")[-1] for d in
                                                                                    (row.rate_devices or ())}:
            results["cases"][key] = {**out, "skipped": f"{where.get('pf_id')} is a device with VF rates"}
            continue
        if case.pf_down:
            sh(f"ip link set {where['ifname']} down")
        configure(config_for(where["selector"], case, num))
        out["validate"] = sh(f"{BIN} validate --json", timeout=300)
        out["dry_run"] = sh(f"{BIN} apply --dry-run --detailed-exitcode", timeout=300)
        out["apply"] = traced(f"{BIN} apply --json")
        out["raw"] = raw(host, where, case)
        put_back(where, case)
        results["cases"][key] = out


def scenario_table() -> None:
    results["setup"] = sh("modprobe igb; modprobe igbvf; modprobe nvme; modprobe netdevsim && "
                          "echo '10 1' > /sys/bus/netdevsim/new_device && "
                          f"echo 8 > /sys/kernel/debug/netdevsim/{NSIM}/max_vfs")
    wait_pf_driver(IGB)
    wait_pf_driver(NVME)
    time.sleep(1.0)
    igb_if = netdev_of(f"{SYS}/{IGB}") or "missing"
    sh(f"ip link set {igb_if} up")
    for _ in range(50):  # the emulated link comes up a moment after the interface does
        if read(f"/sys/class/net/{igb_if}/carrier") == "1":
            break
        time.sleep(0.1)
    nsim_if = netdev_of(f"/sys/bus/netdevsim/devices/{NSIM}") or "missing"
    sh(f"ip link set {nsim_if} up")
    # VFs first, by hand: the cases then judge only the refused step (the count is as configured)
    results["vfs"] = {
        "igb": sh(f"echo 2 > {SYS}/{IGB}/sriov_numvfs"),
        "netdevsim": sh(f"echo 2 > /sys/bus/netdevsim/devices/{NSIM}/sriov_numvfs"),
        "nvme": sh(f"echo 2 > {SYS}/{NVME}/sriov_numvfs"),
    }
    time.sleep(1.0)
    rows: List[Any] = [
        ("igb", {"selector": f'pci = "{IGB}"', "ifname": igb_if, "devlink": f"pci/{IGB}",
                 "pf_id": f"{read(f'{SYS}/{IGB}/vendor')[2:]}:{read(f'{SYS}/{IGB}/device')[2:]}"}),
        ("netdevsim", {"selector": f'name = "{nsim_if}"', "ifname": nsim_if, "devlink": f"netdevsim/{NSIM}"}),
        ("nvme", {"selector": f'pci = "{NVME}"', "devlink": f"pci/{NVME}"}),
    ]
    for name, where in rows:
        run_row(name, where, 2)


if __name__ == "__main__":
    start = time.monotonic()
    {"table": scenario_table}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
