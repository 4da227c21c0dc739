"""Runs INSIDE the kernel-lab guest booted with systemd as PID 1 (LAB_INIT=systemd), sriov-node installed
by tests/lab/boot_plain_pip.sh (a plain `pip install`, no systemd-python). Reads systemd's, the journal's
and the kernel's view; prints one line `@@RESULTS <json>` for tests/lab/test_boot_plain_lab.py.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

SYS = "/sys/bus/pci/devices"
SMALL = "0000:01:00.0"
PROM = "/var/lib/node_exporter/textfile/sriov_node.prom"
results: Dict[str, Any] = {}


def sh(cmd: str, timeout: float = 120) -> Dict[str, Any]:
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return {"rc": p.returncode, "stdout": p.stdout[-200000:], "stderr": p.stderr[-4000:]}
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": "TIMEOUT"}


def show(unit: str, *props: str) -> Dict[str, str]:
    out = sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))["stdout"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def vfs(pf: str) -> Any:
    out = []
    for entry in sorted(glob.glob(f"{SYS}/{pf}/virtfn*"), key=lambda p: int(p.rsplit("virtfn", 1)[1])):
        vf = os.path.basename(os.readlink(entry))
        drv = os.path.join(SYS, vf, "driver")
        out.append([vf, os.path.basename(os.readlink(drv)) if os.path.islink(drv) else None])
    return out


def wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def prom() -> str:
    try:
        with open(PROM) as fh:
            return fh.read()
    except OSError:
        return ""


def scenario_plain() -> None:
    agent = ("ActiveState", "SubState", "StatusText", "NRestarts", "Result", "ExecMainStatus", "WatchdogUSec",
             "ReadWritePaths", "DropInPaths")
    results["agent"] = show("sriov-node-agent.service", *agent)
    results["oneshot"] = show("sriov-node.service", "ActiveState", "Result")
    results["systemd_python"] = sh("cd / && /opt/sriov-node/bin/python -c 'from systemd import daemon'")["rc"]
    results["vfs"] = vfs(SMALL)
    # the device plugin discovers no NVMe function (class 0x0108): a resource there is refused
    with open("/run/export.toml", "w") as fh:
        fh.write(f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n'
                 '  resource = "nvme"\n')
    results["export"] = sh("/opt/sriov-node/bin/sriov-node --config /run/export.toml export device-plugin --json-only")
    results["prom_written"] = wait(lambda: "sriov_node_converged 1" in prom(), 60)
    results["prom"] = prom()
    results["prom_mode"] = oct(os.stat(PROM).st_mode & 0o777) if os.path.exists(PROM) else None
    # three watchdog periods (WatchdogSec=10s) idle: no watchdog kill, no restart
    time.sleep(30)
    results["agent_later"] = show("sriov-node-agent.service", *agent)
    results["journal"] = sh("journalctl -b -u sriov-node-agent.service -o json --no-pager")["stdout"]
    results["agent_log"] = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager")["stdout"][-6000:]
    results["failed"] = sh("systemctl --failed --plain --no-legend")["stdout"]


if __name__ == "__main__":
    start = time.monotonic()
    {"plain": scenario_plain}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
