"""deploy/ansible's role on a real Linux kernel (connection local in the lab guest): the roll-out
converges the NVMe PF, and a change whose probe fails is rolled back
leaving the VFs exactly as before (the same functions, drivers and overrides, read from sysfs)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict

import pytest

from tests.lab.conftest import boot


@pytest.fixture(scope="module")
def rolled() -> Dict[str, Any]:
    # ansible under emulation is slow (every task starts a Python): a longer guest deadline
    return boot("ansible", "tests/lab/guest_ansible.py", LAB_TIMEOUT="1200")


def changed(output: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", output.split("PLAY RECAP", 1)[-1]))


def test_the_role_converges_the_real_kernel(rolled):
    # (a second run reporting 0 changed is tested on five simulated nodes: tests/test_ansible.py)
    first = rolled["first"]
    assert first["rc"] == 0, first["stdout"][-3000:] + first["stderr"]
    assert [(d, o) for _, d, o in rolled["after_first"]["vfs"]] == [("vfio-pci", "vfio-pci")] * 4
    assert changed(first["stdout"]) > 0


def test_a_failed_probe_is_rolled_back_leaving_the_vfs_exactly_as_before(rolled):
    bad = rolled["bad"]
    assert bad["rc"] != 0 and re.search(r"rolled back to generation \d+\s", bad["stdout"]), bad["stdout"][-3000:]
    assert rolled["after_bad"]["vfs"] == rolled["after_first"]["vfs"]
    assert rolled["after_bad"]["config"] == rolled["after_first"]["config"]
    history = json.loads(rolled["after_bad"]["history"])["generations"]
    assert history[-1]["command"] == "rollback"
