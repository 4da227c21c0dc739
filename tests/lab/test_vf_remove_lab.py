"""The simulated kernel's remove/rescan against Linux 6.1's, on the NVMe controller both have: a VF
shows no `remove` (nor `rescan`), a PF does; nvme leaves SR-IOV enabled when its PF goes, so the
VFs outlive the removed PF; a bus rescan brings the PF back with SR-IOV off and no virtfn link."""

from __future__ import annotations

import os
import subprocess
import sys

from sriov_node.host import PCI_DEVICES
from tests.lab.conftest import LAB, REPO

PF0 = "0000:20:00.0"


def _guest() -> dict:
    proc = subprocess.run([str(LAB), "bash tests/lab/vf_remove.sh"], cwd=str(REPO), capture_output=True,
                          text=True, timeout=900, env={**os.environ, "LAB_TIMEOUT": "300"})
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line and " " not in line)
    assert proc.returncode == 0 and "numvfs_after_rescan" in found, proc.stdout[-3000:] + proc.stderr[-2000:]
    return found


def _sim(make_host) -> dict:
    host = make_host(("nvme", 1, None))
    host.sysfs.set_num_vfs(PF0, 2)
    vf1 = host.sysfs.vf_address(PF0, 1)
    seen = {
        "pf_remove": "1",  # written through the model: every PF takes it
        "vf_remove": "1" if os.path.exists(host.path(PCI_DEVICES, vf1, "remove")) else "0",
        "vf_rescan": "1" if os.path.exists(host.path(PCI_DEVICES, vf1, "rescan")) else "0",
    }
    try:
        host.sysfs.write(PCI_DEVICES, (vf1, "remove"), "1\n")
    except OSError:
        pass
    assert host.sysfs.device_exists(vf1)
    host.sysfs.write(PCI_DEVICES, (PF0, "remove"), "1\n")
    seen["pf_after_remove"] = "1" if host.sysfs.device_exists(PF0) else "0"
    seen["vf_after_remove"] = "1" if host.sysfs.device_exists(vf1) else "0"
    host.sysfs.write("sys/bus/pci", ("rescan",), "1\n")
    seen["pf_after_rescan"] = "1" if host.sysfs.device_exists(PF0) else "0"
    seen["numvfs_after_rescan"] = str(host.sysfs.num_vfs(PF0))
    seen["virtfns_after_rescan"] = str(host.sysfs.virtfn_count(PF0))
    seen["vf_after_rescan"] = "1" if host.sysfs.device_exists(vf1) else "0"
    return seen


def test_remove_and_rescan_behave_in_the_model_as_on_linux_6_1(make_host):
    real = _guest()
    assert real["vf_remove"] == "0" and real["pf_remove"] == "1", real
    assert _sim(make_host) == real, sys.version
