"""Runs INSIDE the kernel-lab guest booted with systemd as PID 1, with sriov-node installed from
its Debian package by tests/lab/deb_install.sh. Prints one line `@@RESULTS <json>` for
tests/lab/test_package_lab.py.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest_boot import SMALL, sh, show, vfs, wait  # noqa: E402

results: Dict[str, Any] = {}


def main() -> None:
    deb = os.environ["SRIOV_LAB_DEB"]
    results["system"] = sh("systemctl is-system-running --wait", timeout=180)["stdout"].strip()
    results["oneshot"] = show("sriov-node.service", "ActiveState", "Result", "ExecMainStartTimestampMonotonic",
                              "ActiveEnterTimestampMonotonic", "FragmentPath")
    results["network_pre"] = show("network-pre.target", "ActiveState", "ActiveEnterTimestampMonotonic")
    ready = wait(lambda: "converged" in show("sriov-node-agent.service", "StatusText").get("StatusText", ""), 120)
    results["agent"] = show("sriov-node-agent.service", "ActiveState", "SubState", "StatusText", "MainPID", "FragmentPath")
    results["agent"]["ready"] = ready
    results["at_network_pre"] = sh("cat /run/vfs-at-network-pre")["stdout"]
    results["vfs"] = vfs(SMALL)
    results["which"] = sh("command -v sriov-node; sriov-node --version")["stdout"]
    results["man"] = sh("MANWIDTH=80 man sriov-node 2>&1 | head -5; MANWIDTH=80 man 5 sriov-node.toml 2>&1 | head -3")
    results["verify"] = sh("systemd-analyze verify sriov-node.service sriov-node-agent.service")
    results["completion"] = sh("test -f /usr/share/bash-completion/completions/sriov-node && echo yes")["stdout"].strip()
    # an upgrade (the same package again): the agent restarts, the boot oneshot is not run again
    start = time.monotonic()
    results["upgrade"] = sh(f"dpkg -i {deb}", timeout=300)
    results["upgrade"]["seconds"] = round(time.monotonic() - start, 2)
    results["installed_size_kib"] = sh("dpkg-query -W -f='${Installed-Size}' sriov-node")["stdout"]
    wait(lambda: show("sriov-node-agent.service", "MainPID").get("MainPID") not in ("0", results["agent"]["MainPID"]), 60)
    results["after_upgrade"] = {
        "oneshot": show("sriov-node.service", "ActiveState", "ExecMainStartTimestampMonotonic"),
        "agent": show("sriov-node-agent.service", "ActiveState", "MainPID"),
        "vfs": vfs(SMALL),
    }
    # purge: the package's state goes, the admin's config stays
    results["state_before_purge"] = os.path.isdir("/var/lib/sriov-node")
    results["purge"] = sh("dpkg --purge sriov-node", timeout=300)
    results["after_purge"] = {"state": os.path.exists("/var/lib/sriov-node"),
                              "config": os.path.exists("/etc/sriov-node/config.toml"),
                              "binary": os.path.exists("/usr/bin/sriov-node")}


if __name__ == "__main__":
    start = time.monotonic()
    main()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
