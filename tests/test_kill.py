"""A run killed or stopped at any moment leaves the kernel consistent, and the next run converges.

SIGKILL lands anywhere (inside one of the simulated kernel's writes too: the kernel model undoes
a write whose writer died, as a real kernel never shows half of one). SIGTERM/SIGINT stop the
engine between actions, run the plan's clean-up and record the run as interrupted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.host.observe import observe
from sriov_node.engine.reconcile import reconcile
from sriov_node.sim.kernel import JOURNAL, SimKernel
from sriov_node.engine.state import read_state
from tests.helpers import CLI, PF0, PF1

CONFIGS = [
    f'[[pf]]\npci = "{PF0}"\nnum_vfs = 6\n[[pf.vfs]]\nrange = "0-2"\ndriver = "vfio-pci"\n'
    f'[[pf]]\npci = "{PF1}"\nnum_vfs = 4\n',
    f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'
    f'[[pf.vfs]]\nrange = "2"\ndriver = "none"\n[[pf]]\npci = "{PF1}"\nnum_vfs = 2\n',
    f'[[pf]]\npci = "{PF0}"\nnum_vfs = 5\n[[pf]]\npci = "{PF1}"\nnum_vfs = 3\n[[pf.vfs]]\nrange = "1"\ndriver = "vfio-pci"\n',
]


def spawn(root: str, config: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    return subprocess.Popen([CLI, "--root", root, "--config", config, "apply", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_a_writer_killed_inside_one_write_leaves_nothing_half_done(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 8\n')
    sim = SimKernel(host.root)
    sim.add_fault("stall", device=PF0, seconds=30)  # the enable stops half-way through the 8 VFs
    proc = spawn(host.root, path)
    deadline = time.monotonic() + 30
    while host.sysfs.virtfn_count(PF0) < 4:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    # what the dead writer left, seen raw: half the VFs, and its journal
    assert os.path.isdir(os.path.join(host.root, JOURNAL))
    assert 4 <= host.sysfs.virtfn_count(PF0) < 8 and host.sysfs.num_vfs(PF0) == 0

    fresh = open_host(host.root)  # the next user of the kernel model rolls the write back
    assert SimKernel(host.root).consistency_problems() == []
    assert fresh.sysfs.virtfn_count(PF0) == 0 and fresh.sysfs.num_vfs(PF0) == 0
    SimKernel(host.root).clear_faults()
    report = reconcile(fresh, load_config(path))
    assert report.exit_code == 0 and fresh.sysfs.num_vfs(PF0) == 8
    assert reconcile(open_host(host.root), load_config(path)).writes == 0


def test_sigkill_at_random_moments_then_the_next_run_converges(make_host, write_config):
    rng = random.Random(int(os.environ.get("SRIOV_NODE_KILL_SEED", "20261128")))
    host = make_host()
    paths = [write_config(c) for c in CONFIGS]
    SimKernel(host.root).add_fault("delay", seconds=0.004)  # every write takes a few ms: kills land inside them
    rollbacks = 0
    for cycle in range(32):
        path = paths[cycle % len(paths)]
        proc = spawn(host.root, path)
        time.sleep(rng.uniform(0.0, 0.45))
        proc.kill()
        proc.wait(timeout=10)
        rollbacks += SimKernel(host.root).recover()
        fresh = open_host(host.root)
        assert SimKernel(host.root).consistency_problems() == [], f"cycle {cycle}"
        report = reconcile(fresh, load_config(path))
        assert report.exit_code == 0, f"cycle {cycle}: " + "\n".join(o.error or "" for o in report.outcomes)
        again = reconcile(open_host(host.root), load_config(path))
        assert again.writes == 0 and all(o.status == "unchanged" for o in again.outcomes), f"cycle {cycle}"
        state = observe(fresh)
        assert not [vf for pf in state.pfs for vf in pf.vfs if vf.driver == "iavf" and vf.driver_override]
    print(f"{rollbacks} of 32 kills landed inside a write")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_between_actions_runs_the_clean_up_and_is_recorded(make_host, write_config, sig):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "0-5"\ndriver = "vfio-pci"\n')
    SimKernel(host.root).add_fault("delay", attr="driver_override", seconds=0.2)
    proc = spawn(host.root, path, "--json")
    deadline = time.monotonic() + 30
    def overrides() -> int:
        live = open_host(host.root).sysfs
        addresses = [live.vf_address(PF0, i) for i in range(live.num_vfs(PF0) or 0)]
        return sum(1 for vf in addresses if vf and live.driver_override(vf) == "vfio-pci")

    # VFs created unprobed, then the overrides written slowly (0.2 s each): the signal comes between two
    while overrides() == 0:  # (waiting on what the run has done, not on a clock: a busy machine is slow)
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    body = json.loads(out)
    assert body["interrupted"] is True and body["pfs"][0]["status"] == "interrupted"
    assert "interrupted between actions; clean-up ran" in err
    assert read_state(host)["result"] == "interrupted"
    vfs = observe(open_host(host.root)).pf(PF0).vfs
    assert host.sysfs.autoprobe(PF0) is True  # the clean-up switched it back on
    assert all(vf.driver is None and vf.driver_override == "vfio-pci" for vf in vfs[:6])  # pinned, never iavf
    assert [vf.driver for vf in vfs[6:]] == ["iavf", "iavf"]
    SimKernel(host.root).clear_faults()
    assert reconcile(open_host(host.root), load_config(path)).exit_code == 0
