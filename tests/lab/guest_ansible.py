"""Runs INSIDE the kernel-lab guest: deploy/ansible's playbook applied to the real kernel with
connection local (root prefix /), then a change whose probe fails, rolled back by the role.
Prints one line `@@RESULTS <json>` for tests/lab/test_ansible_lab.py."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest import BIN, SMALL, link, read, sh  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV = os.path.dirname(sys.executable)
results: Dict[str, Any] = {}

FOUR = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n'
TWO = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  driver = "none"\n'


def vfs() -> list:
    out = []
    for i in range(int(read(f"/sys/bus/pci/devices/{SMALL}/sriov_numvfs") or 0)):
        vf = link(f"/sys/bus/pci/devices/{SMALL}/virtfn{i}")  # None: gone since sriov_numvfs was read
        out.append([vf, link(f"/sys/bus/pci/devices/{vf}/driver") if vf else None,
                    read(f"/sys/bus/pci/devices/{vf}/driver_override") if vf else None])
    return out


def play(config: str, probes: list) -> Dict[str, Any]:
    with open("/tmp/node.toml", "w") as fh:
        fh.write(config)
    inventory = {"sriov_nodes": {"hosts": {"lab": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "sriov_node_bin": BIN, "sriov_node_root": "/", "sriov_node_config_file": "/tmp/node.toml",
        "sriov_node_probes": probes, "sriov_node_checkpoint_seconds": 300}}}}
    with open("/tmp/inventory.json", "w") as fh:
        json.dump(inventory, fh)
    env = (f"ANSIBLE_HOME=/tmp/ansible ANSIBLE_LOCAL_TEMP=/tmp/ansible/tmp ANSIBLE_ROLES_PATH={REPO}/deploy/ansible/roles "
           f"ANSIBLE_NOCOLOR=1 PATH={VENV}:$PATH")
    return sh(f"{env} {VENV}/ansible-playbook -i /tmp/inventory.json {REPO}/deploy/ansible/site.yml "
              f"-e sriov_node_become=false", timeout=900)


def main() -> None:
    sh("modprobe nvme; modprobe vfio-pci")
    results["first"] = play(FOUR, [])
    results["after_first"] = {"vfs": vfs(), "config": read("/etc/sriov-node/config.toml")}
    # a change to 2 unbound VFs whose health probe fails: the role rolls the node back
    results["bad"] = play(TWO, ["test -e /nonexistent-probe-target"])
    results["after_bad"] = {"vfs": vfs(), "config": read("/etc/sriov-node/config.toml"),
                            "history": sh(f"{BIN} history --json")["stdout"]}


if __name__ == "__main__":
    start = time.monotonic()
    main()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
