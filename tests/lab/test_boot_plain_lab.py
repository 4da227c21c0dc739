"""sriov-node installed by a plain `pip install` (no extras: no systemd-python, which needs a compiler and
libsystemd's headers) with the shipped units, on a real kernel with systemd as PID 1: the agent speaks
sd_notify itself (READY=1, STATUS=, WATCHDOG=1), logs to the journal through stderr, and writes the
metrics into node_exporter's textfile directory, which the unit's ProtectSystem=strict leaves writable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Dict

import pytest

from tests.lab.conftest import REPO, boot

SMALL = "0000:01:00.0"
CONFIG = (f'[metrics]\ntextfile = "/var/lib/node_exporter/textfile/sriov_node.prom"\n\n'
          f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n')


@pytest.fixture(scope="module")
def plain() -> Dict[str, Any]:
    work = tempfile.mkdtemp(prefix="sriov-node-plain-", dir="/tmp")  # the guest reads the host's /tmp
    try:
        wheels = os.path.join(work, "wheels")
        # this checkout and its dependencies as wheels (offline in the guest); no extras
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                               "-w", wheels, str(REPO)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert not [w for w in os.listdir(wheels) if w.lower().startswith("systemd")]
        config = os.path.join(work, "config.toml")
        with open(config, "w") as fh:
            fh.write(CONFIG)
        return boot("plain", "tests/lab/guest_boot_plain.py", LAB_INIT="systemd",
                    LAB_PRE="tests/lab/boot_plain_pip.sh", LAB_ENV="SRIOV_LAB_CONFIG SRIOV_LAB_WHEELS",
                    SRIOV_LAB_CONFIG=config, SRIOV_LAB_WHEELS=wheels)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_plain_pip_install_reaches_ready_under_the_shipped_unit(plain):
    assert plain["systemd_python"] != 0  # not importable in that venv
    agent = plain["agent"]
    assert agent["ActiveState"] == "active" and agent["SubState"] == "running", plain.get("agent_log")
    assert "1 of 1 PF(s) converged" in agent["StatusText"]  # STATUS= with READY=1, from our own datagrams
    assert plain["vfs"] == [[vf, "vfio-pci"] for vf, _ in plain["vfs"]] and len(plain["vfs"]) == 4


def test_the_watchdog_is_fed_without_systemd_python(plain):
    later = plain["agent_later"]
    assert later["WatchdogUSec"] in ("10s", "10000000")
    assert later["ActiveState"] == "active" and later["NRestarts"] == "0", plain.get("agent_log")
    assert "watchdog" not in plain["agent_log"].lower(), plain["agent_log"]


def test_the_log_reaches_the_journal_with_priorities(plain):
    entries = [json.loads(line) for line in plain["journal"].splitlines() if line.startswith("{")]
    ours = [e for e in entries if str(e.get("MESSAGE", "")).startswith("sriov-node: ")]
    assert any("ready: 1 of 1 PF(s) converged" in e["MESSAGE"] for e in ours), plain["agent_log"]
    assert all(e.get("PRIORITY") in ("2", "3", "4", "6", "7") for e in ours)
    assert not any(str(e.get("MESSAGE", "")).startswith("<") for e in entries)  # prefixes read, not printed


def test_metrics_reach_node_exporters_directory_under_the_unit(plain):
    assert plain["prom_written"], plain["agent_log"]  # else: "metrics not written: ... read-only"
    assert "metrics not written" not in plain["agent_log"]
    assert "/var/lib/node_exporter/textfile" in plain["agent"]["ReadWritePaths"]
    assert "sriov_node_pf_vfs_desired{" in plain["prom"] and plain["prom_mode"] == "0o644"


def test_export_refuses_a_resource_on_the_real_kernels_nvme_vfs(plain):
    """The real device plugin discovers no NVMe VF (PCI class 0x0108): the export names the PF and the class."""
    export = plain["export"]
    assert export["rc"] == 1, export
    message = json.loads(export["stdout"])["error"]["message"]
    assert f"the VFs of {SMALL} are PCI class 0x010802 (mass storage controller) functions" in message
