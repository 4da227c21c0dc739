"""The Debian package on a real kernel with systemd as PID 1: installed with dpkg in the guest,
the packaged units converge before network-pre.target and the agent reaches READY; the man pages
render and `systemd-analyze verify` is clean; an upgrade restarts the agent without re-running the
boot oneshot; purge removes /var/lib/sriov-node and keeps the admin's config."""

from __future__ import annotations

import glob
import os
import subprocess
import tempfile
from typing import Any, Dict

import pytest

from tests.lab.conftest import REPO, boot


SMALL = "0000:01:00.0"
GOOD = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n'


@pytest.fixture(scope="module")
def packaged(tmp_path_factory) -> Dict[str, Any]:
    out = tempfile.mkdtemp(prefix="sriov-node-deb.", dir="/tmp")  # /tmp: the guest sees the host's files
    proc = subprocess.run([str(REPO / "scripts/package"), "--no-lint", "--out", out],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deb = glob.glob(os.path.join(out, "sriov-node_*_all.deb"))[0]
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir="/tmp", delete=False) as fh:
        fh.write(GOOD)
    try:
        return boot("package", "tests/lab/guest_package.py", LAB_INIT="systemd", LAB_PRE="tests/lab/deb_install.sh",
                    LAB_ENV="SRIOV_LAB_CONFIG SRIOV_LAB_DEB", SRIOV_LAB_CONFIG=fh.name, SRIOV_LAB_DEB=deb)
    finally:
        os.unlink(fh.name)


def test_the_packaged_oneshot_converges_before_network_pre(packaged):
    one, pre = packaged["oneshot"], packaged["network_pre"]
    assert one["FragmentPath"] in ("/lib/systemd/system/sriov-node.service", "/usr/lib/systemd/system/sriov-node.service")
    assert one["ActiveState"] == "active" and one["Result"] == "success", packaged
    assert 0 < int(one["ActiveEnterTimestampMonotonic"]) <= int(pre["ActiveEnterTimestampMonotonic"])
    rows = [line.split() for line in packaged["at_network_pre"].splitlines() if line.startswith(SMALL)]
    assert [(r[1], r[3] if len(r) > 3 else None) for r in rows] == [(f"virtfn{i}", "vfio-pci") for i in range(4)]
    assert packaged["which"].splitlines()[0] == "/usr/bin/sriov-node"


def test_the_packaged_agent_reaches_ready(packaged):
    agent = packaged["agent"]
    assert agent["ready"] and agent["ActiveState"] == "active" and agent["SubState"] == "running", agent
    assert "1 of 1 PF(s) converged" in agent["StatusText"]


def test_man_pages_render_and_verify_is_clean(packaged):
    man = packaged["man"]
    assert man["rc"] == 0 and "SRIOV-NODE(8)" in man["stdout"] and "SRIOV-NODE.TOML(5)" in man["stdout"], man
    verify = packaged["verify"]
    assert verify["rc"] == 0 and verify["stderr"].strip() == "", verify
    assert packaged["completion"] == "yes"


def test_an_upgrade_restarts_the_agent_and_not_the_boot_oneshot(packaged):
    assert packaged["upgrade"]["rc"] == 0, packaged["upgrade"]
    print(f"dpkg -i (upgrade, guest under TCG): {packaged['upgrade']['seconds']} s; "
          f"installed size {packaged['installed_size_kib']} KiB")
    after = packaged["after_upgrade"]
    assert after["oneshot"]["ExecMainStartTimestampMonotonic"] == packaged["oneshot"]["ExecMainStartTimestampMonotonic"]
    assert after["agent"]["ActiveState"] == "active"
    assert after["agent"]["MainPID"] not in ("0", packaged["agent"]["MainPID"])
    assert [d for _, d in after["vfs"]] == ["vfio-pci"] * 4


def test_purge_removes_the_state_and_keeps_the_config(packaged):
    assert packaged["state_before_purge"] and packaged["purge"]["rc"] == 0, packaged["purge"]
    assert packaged["after_purge"] == {"state": False, "config": True, "binary": False}
