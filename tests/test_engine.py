"""The engine tells the truth: "converged" means a fresh read of the kernel agrees, on every path.

One test (or a few) per case of the engine issue, each on the simulated kernel.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.host.observe import observe
from sriov_node.engine.reconcile import reconcile
from sriov_node.sim.kernel import SimKernel
from sriov_node.engine.state import read_state
from tests.helpers import run_cli, sim_writes

from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)
VF = ["0000:20:02.0", "0000:20:02.1", "0000:20:02.2", "0000:20:02.3"]  # PF0's VFs, as the X710 lays them out


def apply(host, path, **kw):
    return reconcile(open_host(host.root), load_config(path), **kw)


def drivers(host, pf=PF0):
    pf_state = observe(host).pf(pf)
    return [(vf.driver, vf.driver_override) for vf in pf_state.vfs]


def status(host, path):
    return json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)


# ---------------------------------------------------------------------------- 1. a failed default probe


def test_a_default_driver_probe_that_failed_is_reported_then_repaired(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n')
    SimKernel(host.root).add_fault("probe_fails", driver="iavf", device=VF[1], errno="EINVAL")
    report = apply(host, path)
    (outcome,) = report.outcomes
    assert report.exit_code == 1 and outcome.status == "failed"
    assert "VF 1: no driver bound" in outcome.error and "(iavf)" in outcome.error
    assert [f["vf"] for f in outcome.findings] == [1]
    body = status(host, path)
    assert body["pfs"][0]["converged"] is False and body["pfs"][0]["vfs"][1]["matches"] is False
    assert read_state(host)["pfs"][PF0]["status"] == "failed"

    again = apply(host, path)  # probed again: the kernel still refuses, and says why
    assert again.outcomes[0].status == "failed"
    assert "VF 1" in again.outcomes[0].error and "iavf failed to probe" in again.outcomes[0].error
    assert "EINVAL" in again.outcomes[0].error

    SimKernel(host.root).clear_faults()
    fixed = apply(host, path)
    assert fixed.outcomes[0].status == "changed" and fixed.exit_code == 0
    assert [d for d, _ in drivers(host)] == ["iavf"] * 4
    assert status(host, path)["pfs"][0]["converged"] is True
    assert apply(host, path).writes == 0


# ---------------------------------------------------------------------------- 2. fewer VFs than sriov_numvfs


@pytest.mark.parametrize("driver", [None, "vfio-pci"])
def test_a_vf_that_never_appeared_is_repaired_by_making_the_vfs_again(make_host, write_config, driver):
    host = make_host()
    group = f'[[pf.vfs]]\nrange = "0-3"\ndriver = "{driver}"\n' if driver else ""
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n{group}')
    SimKernel(host.root).add_fault("vf_never_appears", device=PF0, vf=2)
    first = apply(host, path, timeout=0.3)
    assert first.exit_code == 1 and "VF(s) exist" in first.outcomes[0].error
    assert host.sysfs.num_vfs(PF0) == 4 and host.sysfs.virtfn_count(PF0) == 3  # the kernel's word vs its links
    body = status(host, path)
    assert body["pfs"][0]["converged"] is False
    assert any("VF(s) 2 are missing" in line for line in body["pfs"][0]["findings"])
    # the VFs are made anew, so none of them is "ok", whatever driver it has now
    assert [(vf["index"], vf["matches"]) for vf in body["pfs"][0]["vfs"]] == [(0, None), (1, None), (3, None)]
    text = run_cli("status", "--verbose", root=host.root, config=path).stdout
    assert "ok (" not in text and text.count("not compared: the next apply makes the VFs anew") == 3

    SimKernel(host.root).clear_faults()
    fixed = apply(host, path)
    assert fixed.exit_code == 0, fixed.outcomes[0].error
    assert host.sysfs.virtfn_count(PF0) == 4
    assert [d for d, _ in drivers(host)] == [driver or "iavf"] * 4
    assert apply(host, path).writes == 0


# ---------------------------------------------------------------------------- 3. a failed bind never hands VFs to iavf


def test_one_failed_vfio_bind_leaves_the_other_vfio_vfs_on_vfio(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-2"\ndriver = "vfio-pci"\n')
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", device=VF[1], errno="EINVAL")
    report = apply(host, path)
    assert report.exit_code == 1 and "VF 1" in report.outcomes[0].error
    assert drivers(host) == [("vfio-pci", "vfio-pci"), (None, "vfio-pci"), ("vfio-pci", "vfio-pci"), ("iavf", None)]
    assert host.sysfs.autoprobe(PF0) is True
    assert not any(p.endswith("iavf/bind") for p, _, _ in sim_writes(host))


def test_a_pf_wide_failure_runs_the_clean_up_without_giving_named_vfs_away(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'
                        '[[pf.vfs]]\nrange = "2"\ndriver = "none"\n')
    # the restore of autoprobe (its 2nd write) fails: the plan stops, its clean-up runs
    SimKernel(host.root).add_fault("errno", device=PF0, attr="sriov_drivers_autoprobe", nth=2, errno="EIO")
    report = apply(host, path)
    assert report.exit_code == 1 and "sriov_drivers_autoprobe" in report.outcomes[0].error
    assert host.sysfs.autoprobe(PF0) is True  # the clean-up's own write
    assert drivers(host) == [("vfio-pci", "vfio-pci"), ("vfio-pci", "vfio-pci"), (None, "none"), ("iavf", None)]


# ---------------------------------------------------------------------------- 4. a dropped driver line


def test_dropping_the_driver_line_returns_vfs_to_the_default_driver(make_host, write_config):
    host = make_host()
    apply(host, write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'))
    assert drivers(host) == [("vfio-pci", "vfio-pci")] * 2
    plain = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\n')
    dry = apply(host, plain, dry_run=True)
    assert dry.outcomes[0].status == "planned"
    report = apply(host, plain)
    assert report.outcomes[0].status == "changed", report.outcomes[0].error
    assert drivers(host) == [("iavf", None)] * 2
    assert apply(host, plain).writes == 0


def test_none_keeps_a_vf_unbound_and_any_leaves_it_alone(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 3\n[[pf.vfs]]\nrange = "0"\ndriver = "none"\n'
                        '[[pf.vfs]]\nrange = "1"\ndriver = "any"\n')
    assert apply(host, path).exit_code == 0
    assert drivers(host) == [(None, "none"), ("iavf", None), ("iavf", None)]
    SimKernel(host.root).load_module("vfio-pci")
    host.sysfs.unbind(VF[1], "iavf")  # another tool takes VF 1
    host.sysfs.set_driver_override(VF[1], "vfio-pci")
    host.sysfs.drivers_probe(VF[1])
    report = apply(host, path)
    assert report.outcomes[0].status == "unchanged" and report.writes == 0
    assert drivers(host)[1] == ("vfio-pci", "vfio-pci")
    host.sysfs.drivers_probe(VF[0])  # a probe cannot bind a VF pinned to "none"
    assert drivers(host)[0] == (None, "none")


# ---------------------------------------------------------------------------- 5. absent PFs fail alone


def test_a_pf_whose_driver_is_not_bound_yet_fails_alone(make_host, write_config):
    host = make_host()
    host.sysfs.unbind(PF0, "i40e")  # at boot: no driver yet, so no netdev named ens1f0
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf]]\nname = "ens1f1"\nnum_vfs = 2\n')
    report = apply(host, path)
    assert report.exit_code == 1
    by_key = {o.key: o for o in report.outcomes}
    assert by_key["pf[0]"].status == "failed" and "no network interface named 'ens1f0'" in by_key["pf[0]"].error
    assert by_key["pf[1]"].status == "changed" and host.sysfs.num_vfs(PF1) == 2
    assert read_state(host)["result"] == "failed"


def test_reconcile_only_touches_the_pfs_it_is_asked_about(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n[[pf]]\npci = "{PF1}"\nnum_vfs = 3\n'
                        '[[pf]]\npci = "0000:99:00.0"\nnum_vfs = 1\n')
    report = apply(host, path, only=frozenset({PF1}))
    assert [(o.pci, o.status) for o in report.outcomes] == [(PF1, "changed")]  # not the absent block either
    assert host.sysfs.num_vfs(PF0) == 0 and host.sysfs.num_vfs(PF1) == 3
    full = apply(host, path)
    assert {o.key: o.status for o in full.outcomes} == {"pf[0]": "changed", "pf[1]": "unchanged", "pf[2]": "failed"}
    apply(host, path, only=frozenset({PF0}))
    state = read_state(host)
    assert set(state["pfs"]) == {PF0, PF1}  # a one-PF run keeps the other PF's record
    assert state["pfs"][PF1]["status"] == "unchanged" and state["only"] == [PF0]


def test_write_counts_are_per_run(make_host, write_config):
    host = open_host(make_host().root)
    path = load_config(write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    first = reconcile(host, path)
    second = reconcile(host, path)  # the same Host, as a daemon keeps it
    assert first.writes == 1 and second.writes == 0


# ---------------------------------------------------------------------------- 6. robustness of the CLI


def test_a_state_path_that_is_a_directory_is_a_notice_not_a_crash(make_host, write_config):
    host = make_host()
    Path(host.root, "var/lib/sriov-node/state.json").mkdir(parents=True)
    result = run_cli("apply", "--json", root=host.root, config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    body = json.loads(result.stdout)
    assert body["result"] == "converged"
    assert "not recorded" in body["notices"][0] and "is a directory" in body["notices"][0]


def test_a_full_disk_is_a_notice_not_a_crash(make_host, write_config, monkeypatch):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sriov_node.engine.state.os.fsync", full)
    report = apply(host, path)
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 2
    assert "no space left on the device" in report.notices[0]


def test_a_lock_path_that_is_a_fifo_is_named(make_host, write_config):
    host = make_host()
    lock = Path(host.root, "run/sriov-node/apply.lock")
    lock.parent.mkdir(parents=True)
    os.mkfifo(lock)
    result = run_cli("apply", "--json", root=host.root, config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is a FIFO, not a regular file; remove it" in json.loads(result.stdout)["error"]["message"]
    assert sim_writes(host) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, a lock error must not say 'run as root'")
def test_lock_directory_errors_say_what_is_wrong(make_host, write_config):
    host = make_host()
    Path(host.root, "run/sriov-node").write_text("a file where the directory goes")
    result = run_cli("apply", root=host.root, config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    assert result.returncode == 1
    assert "run as root" not in result.stderr
    assert "not a directory" in result.stderr or "something else is in the way" in result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_timeout_must_be_finite_and_positive(make_host, write_config, value):
    host = make_host()
    result = run_cli("apply", "--json", "--timeout", value, root=host.root,
                     config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    assert result.returncode == 2 and "finite" in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "UsageError"
    assert sim_writes(host) == []


@pytest.mark.parametrize("command", [["apply"], ["apply", "--dry-run"], ["status"], ["validate"]])
def test_json_errors_before_planning_are_json_too(tmp_path, command):
    result = run_cli(*command, "--json", root=str(tmp_path / "missing"))
    assert result.returncode == 2
    body = json.loads(result.stdout)
    assert body["error"]["type"] == "UsageError" and "no such directory" in body["error"]["message"]


# ---------------------------------------------------------------------------- 7. MAC selectors on a captured tree


def test_a_capture_never_asks_this_machines_netlink(make_host, write_config, monkeypatch, tmp_path):
    import shutil

    from sriov_node.host.links import NetlinkLinks

    def refuse(self, ifname):
        raise AssertionError(f"asked this machine's netlink about {ifname}")

    monkeypatch.setattr(NetlinkLinks, "permanent_mac", refuse)
    host = make_host()
    capture = tmp_path / "capture"
    shutil.copytree(host.root, capture, symlinks=True)
    os.unlink(capture / ".sriov-node-sim.json")
    netdev = capture / "sys/devices/pci0000:00/0000:00:03.0" / PF0 / "net/ens1f0"
    (netdev / "addr_assign_type").write_text("3\n")  # set by userspace: not the permanent MAC
    mac = (netdev / "address").read_text().strip()
    other = (capture / "sys/devices/pci0000:00/0000:00:03.0" / PF1 / "net/ens1f1/address").read_text().strip()
    captured = open_host(str(capture))
    assert captured.kind == "capture" and captured.links.permanent_mac("ens1f0") is None
    unknown = reconcile(captured, load_config(write_config(f'[[pf]]\nmac = "{mac}"\nnum_vfs = 1\n')), dry_run=True)
    assert unknown.outcomes[0].status == "failed" and "permanent MAC" in unknown.outcomes[0].error
    known = reconcile(captured, load_config(write_config(f'[[pf]]\nmac = "{other}"\nnum_vfs = 1\n')), dry_run=True)
    assert [(o.pci, o.status) for o in known.outcomes] == [(PF1, "planned")]


@pytest.mark.parametrize("dry_run", (False, True), ids=("apply", "dry-run"))
def test_each_target_is_compared_once_by_the_survey_and_once_more_only_to_verify(
        make_host, write_config, monkeypatch, dry_run):
    """One survey, one verdict: the plan and the caveats come from the survey's findings; the only
    other comparison is the verification after a PF's plan ran."""
    from sriov_node.engine import compare

    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n[[pf]]\npci = "{PF1}"\nnum_vfs = 0\n')
    calls = []
    real = compare._compare
    monkeypatch.setattr(compare, "_compare", lambda spec, pf, *rest: calls.append(pf.pci) or real(spec, pf, *rest))
    report = reconcile(open_host(host.root), load_config(path), dry_run=dry_run)
    assert report.exit_code == 0
    # PF0 has work: the survey's comparison, then (apply only) the verification; PF1 is converged
    assert sorted(calls) == sorted([PF0, PF1] + ([] if dry_run else [PF0]))
    calls.clear()
    report = reconcile(open_host(host.root), load_config(path), dry_run=dry_run)  # converged (or still planned)
    assert sorted(calls) == sorted([PF0, PF1]) and report.writes == 0
