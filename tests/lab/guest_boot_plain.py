"""Runs INSIDE the kernel-lab guest booted with systemd as PID 1 (LAB_INIT=systemd), sriov-node installed
by tests/lab/boot_plain_pip.sh (a plain `pip install`, no systemd-python). Reads systemd's, the journal's
and the kernel's view; prints one line `@@RESULTS <json>` for tests/lab/test_boot_plain_lab.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest_boot import SMALL, sh, show, vfs, wait  # noqa: E402  (the helpers every systemd-boot scenario uses)

PROM = "/var/lib/node_exporter/textfile/sriov_node.prom"
results: Dict[str, Any] = {}


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
