"""The simulated 82576 (QEMU's igb) answers tests/lab/igb_sequence.py as Linux 6.1 did in the lab.

tests/data/lab/igb-sequence.json holds the kernel's answers from the lab (LAB_IGB=1; recorded by
tests/lab/test_igb_sim_lab.py with IGB_SEQUENCE_RECORD=1, which compares the two live): errnos, read-backs
and the PCI/netdev uevents' order after each write.
"""

from __future__ import annotations

import json
from pathlib import Path

from sriov_node.sim.build import create_host
from tests.lab.igb_sequence import compare, run_sim

RECORDED = Path(__file__).parent / "data" / "lab" / "igb-sequence.json"


def test_the_simulated_82576_answers_as_the_lab_kernel_did(tmp_path):
    root = create_host(str(tmp_path / "host"), [("82576", 1, None)])
    kernel = json.loads(RECORDED.read_text())
    differences = compare(kernel, run_sim(root, "0000:20:00.0"))
    assert not differences, "\n".join(f"{where}: kernel {a!r}, simulator {b!r}" for where, a, b in differences)


def test_what_the_daemon_waits_for_comes_in_the_kernels_order(tmp_path):
    # each VF is probed before the next one is added, and the PF's change (its write is done) comes last
    root = create_host(str(tmp_path / "host"), [("82576", 1, None)])
    answers = run_sim(root, "0000:20:00.0")
    assert answers["enable_2_again"]["uevents"] == [
        "add pci vf0", "change pci vf0", "add net vf0-net", "bind pci vf0 igbvf",
        "add pci vf1", "change pci vf1", "add net vf1-net", "bind pci vf1 igbvf", "change pci pf igb"]
    # KOBJ_UNBIND is sent once the driver is gone: no DRIVER
    assert answers["unbind_vf0"]["uevents"] == ["remove net vf0-net", "unbind pci vf0"]
    # igb keeps a VF's new MAC for igbvf's next probe
    assert answers["after_mac"]["links"][0]["mac"] == "admin"
    assert answers["after_mac"]["state"]["vfs"][0]["netdev_mac"] == "other"
    assert answers["after_rebind"]["state"]["vfs"][0]["netdev_mac"] == "admin"
