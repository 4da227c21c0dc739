"""The units as shipped, on a real kernel with systemd as PID 1: installed by scripts/install,
the boot oneshot converges before network-pre.target, the daemon reaches READY=1 and repairs
a PF driver reload; a broken config fails the oneshot visibly without hanging the boot."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict

import pytest

from tests.lab.conftest import boot

SMALL = "0000:01:00.0"
GOOD = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n'
BROKEN = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = "four"\n'


def systemd_boot(scenario: str, config: str) -> Dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir="/tmp", delete=False) as fh:
        fh.write(config)
    try:
        return boot(scenario, "tests/lab/guest_boot.py", LAB_INIT="systemd", LAB_PRE="tests/lab/boot_install.sh",
                    LAB_ENV="SRIOV_LAB_CONFIG", SRIOV_LAB_CONFIG=fh.name)
    finally:
        os.unlink(fh.name)


@pytest.fixture(scope="module")
def booted() -> Dict[str, Any]:
    return systemd_boot("boot", GOOD)


@pytest.fixture(scope="module")
def broken() -> Dict[str, Any]:
    return systemd_boot("broken", BROKEN)


def test_the_oneshot_finished_before_network_pre(booted):
    one, pre = booted["oneshot"], booted["network_pre"]
    assert one["ActiveState"] == "active" and one["Result"] == "success", booted
    assert pre["ActiveState"] == "active"
    assert 0 < int(one["ActiveEnterTimestampMonotonic"]) <= int(pre["ActiveEnterTimestampMonotonic"])
    # what the kernel showed when network-pre.target was reached (a unit ordered after it)
    rows = [line.split() for line in booted["at_network_pre"].splitlines() if line.startswith(SMALL)]
    assert [(r[1], r[3] if len(r) > 3 else None) for r in rows] == [(f"virtfn{i}", "vfio-pci") for i in range(4)]
    assert booted["system"] in ("running", "degraded") and "sriov-node" not in booted["failed"]


def test_the_oneshot_logs_structured_fields_to_the_journal(booted):
    entries = [json.loads(line) for line in booted["journal"].splitlines() if line.startswith("{")]
    assert any(e.get("SRIOV_PF") == SMALL for e in entries), booted["journal"][-2000:]


def test_the_daemon_is_ready_and_puts_back_vfs_taken_away_by_hand(booted):
    agent = booted["agent"]
    assert agent["ActiveState"] == "active" and agent["SubState"] == "running", agent
    assert "1 of 1 PF(s) converged" in agent["StatusText"]
    assert booted["disable"]["rc"] == 0
    by_hand = booted["by_hand"]
    assert by_hand["restored"], booted.get("agent_journal")
    print(f"echo 0 > sriov_numvfs to converged again (guest, TCG): {by_hand['seconds']} s")


def test_the_daemon_looks_again_after_a_pf_driver_reload(booted):
    assert booted["rmmod"]["rc"] == 0 and booted["after_rmmod"]["pf_driver"] is False
    reload = booted["reload"]
    assert reload["pf_bound"] and reload["looked_again"], booted.get("agent_journal")
    assert [d for _, d in reload["vfs"]] == ["vfio-pci"] * 4
    print(f"PF bind to the daemon's verdict (guest, TCG): {reload['bind_to_verdict_seconds']} s")
    assert "1 of 1 PF(s) converged" in booted["agent_after"]["StatusText"]


def test_a_broken_config_fails_the_oneshot_visibly_without_hanging_the_boot(broken):
    assert broken["oneshot"]["Result"] == "exit-code" and broken["oneshot"]["ExecMainStatus"] == "2"
    assert "sriov-node.service" in broken["failed"]
    assert "pf[0].num_vfs" in broken["journal"]
    assert broken["system"] == "degraded"
    assert broken["vfs"] == []


@pytest.fixture(scope="module")
def day2() -> Dict[str, Any]:
    return systemd_boot("day2", GOOD)


def test_a_set_while_the_agent_runs_stays(day2):
    assert day2["agent"]["ActiveState"] == "active", day2.get("agent_journal")
    assert [d for _, d in day2["before"]] == ["vfio-pci"] * 4
    assert day2["set"]["rc"] == 0, day2["set"]
    assert [d for _, d in day2["after_set"]] == ["vfio-pci"] * 2
    assert day2["counts_for_10s"] and set(day2["counts_for_10s"]) == {2}, day2.get("agent_journal")
    assert [(g["command"], g["outcome"]) for g in json.loads(day2["history_after_set"])["generations"]][-1] == ("set", "converged")
    print(f"set (guest, TCG): {day2['set_seconds']} s")


def test_an_uncommitted_checkpoint_is_rolled_back_by_the_agent(day2):
    assert day2["checkpoint"]["rc"] == 0, day2["checkpoint"]
    assert "agent daemon" in day2["checkpoint"]["stdout"] + day2["checkpoint"]["stderr"]  # it, not a timer, restores
    assert [d for _, d in day2["after_checkpoint"]] == ["vfio-pci"] * 3
    rolled = day2["rolled_back"]
    assert rolled["restored"], day2.get("agent_journal")
    assert rolled["config"] == day2["set_config"]  # the file as before, byte for byte
    assert [d for _, d in day2["after_rollback"]] == ["vfio-pci"] * 2
    history = json.loads(day2["history"])["generations"]
    assert history[-1]["command"] == "checkpoint-expired" and history[-1]["outcome"] == "converged", history[-1]
    assert any(g["checkpoint"] and g["checkpoint"]["state"] == "expired" for g in history)
    assert "checkpoint of generation" in day2["agent_journal"]
    print(f"apply --checkpoint 10 to rolled back (guest, TCG): {rolled['seconds']} s")
