"""Runs INSIDE the kernel-lab guest booted with systemd as PID 1 (LAB_INIT=systemd), after the
boot, with sriov-node installed by tests/lab/boot_install.sh. Reads systemd's and the kernel's
own view; prints one line `@@RESULTS <json>` for tests/lab/test_boot_lab.py.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest import link  # noqa: E402  (a link's target name, None once it is gone)

SYS = "/sys/bus/pci/devices"
SMALL = "0000:01:00.0"
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
        vf = link(entry)
        if vf is not None:  # gone since the listing: the VFs are being changed, the caller looks again
            out.append([vf, link(os.path.join(SYS, vf, "driver"))])
    return out


def wait(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def scenario_boot() -> None:
    results["system"] = sh("systemctl is-system-running")["stdout"].strip()
    results["oneshot"] = show("sriov-node.service", "ActiveState", "Result", "ExecMainStatus",
                              "ActiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic")
    results["network_pre"] = show("network-pre.target", "ActiveState", "ActiveEnterTimestampMonotonic")
    results["agent"] = show("sriov-node-agent.service", "ActiveState", "SubState", "StatusText", "NRestarts")
    results["at_network_pre"] = sh("cat /run/vfs-at-network-pre")["stdout"]
    results["vfs"] = vfs(SMALL)
    results["failed"] = sh("systemctl --failed --plain --no-legend")["stdout"]
    results["journal"] = sh("journalctl -b -u sriov-node.service -u sriov-node-agent.service -o json --no-pager")["stdout"]
    if results["agent"].get("ActiveState") != "active":
        return
    # VFs taken away by hand (the old `echo 0 > sriov_numvfs`): the daemon puts them back
    start = time.monotonic()
    results["disable"] = sh(f"echo 0 > {SYS}/{SMALL}/sriov_numvfs")
    ok = wait(lambda: [d for _, d in vfs(SMALL)] == ["vfio-pci"] * 4, 90)
    results["by_hand"] = {"restored": ok, "seconds": round(time.monotonic() - start, 2), "vfs": vfs(SMALL)}
    # a PF driver reload: nvme leaves SR-IOV enabled when it goes ("driver left SR-IOV enabled after
    # remove"), so the VFs stay; the PF's bind event makes the daemon look again, and find it converged
    runs_before = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager | grep -c 'run [0-9]*:'")["stdout"].strip()
    results["rmmod"] = sh("rmmod nvme")
    results["after_rmmod"] = {"pf_driver": os.path.islink(f"{SYS}/{SMALL}/driver"), "vfs": vfs(SMALL)}
    start = time.monotonic()
    results["modprobe"] = sh("modprobe nvme")
    bound = wait(lambda: os.path.islink(f"{SYS}/{SMALL}/driver"), 60)
    t_bind = time.monotonic()

    def looked_again() -> bool:
        out = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager | grep -c 'run [0-9]*:'")["stdout"].strip()
        return out.isdigit() and runs_before.isdigit() and int(out) > int(runs_before)

    again = bound and wait(looked_again, 90)
    results["reload"] = {"pf_bound": bound, "looked_again": again, "bind_seconds": round(t_bind - start, 2),
                         "bind_to_verdict_seconds": round(time.monotonic() - t_bind, 2), "vfs": vfs(SMALL)}
    results["agent_after"] = show("sriov-node-agent.service", "ActiveState", "StatusText")
    results["agent_journal"] = sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager")["stdout"][-6000:]


def scenario_broken() -> None:
    results["system"] = sh("systemctl is-system-running")["stdout"].strip()
    results["oneshot"] = show("sriov-node.service", "ActiveState", "Result", "ExecMainStatus")
    results["failed"] = sh("systemctl --failed --plain --no-legend")["stdout"]
    results["journal"] = sh("journalctl -b -u sriov-node.service -o cat --no-pager")["stdout"][-4000:]
    results["vfs"] = vfs(SMALL)


def agent_journal() -> str:
    return sh("journalctl -b -u sriov-node-agent.service -o cat --no-pager")["stdout"]


def config_bytes() -> str:
    with open("/etc/sriov-node/config.toml") as fh:
        return fh.read()


def scenario_day2() -> None:
    """With both units running: `set` changes the VF count and it stays (10 s); `apply --checkpoint
    10` without `commit` is rolled back by the daemon at the deadline (VFs and file as before)."""
    cli = os.path.join(os.path.dirname(sys.executable), "sriov-node")  # what the units run (scripts/install --bin)
    results["agent"] = show("sriov-node-agent.service", "ActiveState", "SubState", "StatusText")
    if results["agent"].get("ActiveState") != "active":
        results["agent_journal"] = agent_journal()[-6000:]
        return
    results["before"] = vfs(SMALL)
    start = time.monotonic()
    results["set"] = sh(f"{cli} set {SMALL} num_vfs=2 vfs=0-1:vfio-pci")
    results["set_seconds"] = round(time.monotonic() - start, 2)
    results["after_set"] = vfs(SMALL)
    seen = []
    end = time.monotonic() + 10
    while time.monotonic() < end:  # the VF count the daemon leaves, every half second for 10 s
        seen.append(len(vfs(SMALL)))
        time.sleep(0.5)
    results["counts_for_10s"] = seen
    results["set_config"] = config_bytes()
    results["history_after_set"] = sh(f"{cli} history --json")["stdout"]
    # a checkpoint, never committed: the daemon restores the set's generation at the deadline
    with open("/etc/sriov-node/config.toml", "w") as fh:
        fh.write(results["set_config"].replace("num_vfs = 2", "num_vfs = 3").replace('"0-1"', '"0-2"'))
    results["checkpoint_config"] = config_bytes()
    start = time.monotonic()
    results["checkpoint"] = sh(f"{cli} apply --checkpoint 10")
    results["after_checkpoint"] = vfs(SMALL)
    restored = wait(lambda: len(vfs(SMALL)) == 2 and config_bytes() == results["set_config"], 120)
    results["rolled_back"] = {"restored": restored, "seconds": round(time.monotonic() - start, 2),
                              "vfs": vfs(SMALL), "config": config_bytes()}
    time.sleep(2)
    results["after_rollback"] = vfs(SMALL)
    results["history"] = sh(f"{cli} history --json")["stdout"]
    results["status"] = sh(f"{cli} status")
    results["agent_after"] = show("sriov-node-agent.service", "ActiveState", "StatusText")
    results["agent_journal"] = agent_journal()[-8000:]


if __name__ == "__main__":
    start = time.monotonic()
    {"boot": scenario_boot, "broken": scenario_broken, "day2": scenario_day2}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
