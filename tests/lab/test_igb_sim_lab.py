"""The simulator's 82576 held to the real kernel's: one sequence of writes, two kernels, the same answers.

tests/lab/igb_sequence.py runs its steps in the lab's guest (LAB_IGB=1: QEMU's igb under Linux 6.1;
raw sysfs writes, `ip link set ... vf N ...`, `ip -d -j link`, the kernel's uevents from its netlink
group) and on a simulated host with one `82576` (the same writes through the simulated kernel, `ip`'s
VF settings through the simulated host's netlink capability, the simulator's uevent log). Every
errno, read-back (sriov_numvfs, virtfn links, VF drivers and IDs, VF netdevs and their MACs, IOMMU
groups, the VF settings `ip` shows) and the order of the PCI and netdev uevents (what
sriov_node/service/uevents.py routes and the daemon's burst ends on) must be the same.

One boot, ≈ 35 s wall under TCG (≈ 25 s of it the sequence in the guest). The answers of the last
agreeing run are kept in tests/data/lab/igb-sequence.json: tests/test_sim_82576.py holds the simulator
to them without the lab.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import pytest

from sriov_node.sim.build import create_host
from tests.lab.conftest import REPO, boot, need_igb
from tests.lab.igb_sequence import compare, run_sim

RECORDED = REPO / "tests" / "data" / "lab" / "igb-sequence.json"


@pytest.fixture(scope="module")
def lab() -> Dict[str, Any]:
    need_igb()
    out = boot("guest", script="tests/lab/igb_sequence.py", LAB_IGB="1", LAB_TIMEOUT="600")
    assert "error" not in out, out["error"]
    return out["sequence"]


def test_the_simulated_82576_answers_the_sequence_as_the_kernel_does(lab, tmp_path):
    root = create_host(str(tmp_path / "host"), [("82576", 1, None)])
    sim = run_sim(root, "0000:20:00.0")
    # the sequence reached its end in the guest, with what the issue reported
    assert lab["identity"]["sriov_totalvfs"] == "7" and lab["enable_4"]["answer"] == "ok"
    assert lab["resize_4_to_2"]["answer"] == "EBUSY" and lab["vlan_8021ad"]["answer"] == "EPROTONOSUPPORT"
    differences = compare(lab, sim)
    if os.environ.get("IGB_SEQUENCE_RECORD") == "1" and not differences:
        RECORDED.write_text(json.dumps(lab, indent=1, sort_keys=True) + "\n")
    assert not differences, "the simulator differs from the kernel:\n" + "\n".join(
        f"  {where}: kernel {kernel!r}, simulator {model!r}" for where, kernel, model in differences)
