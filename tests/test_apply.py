"""apply on the simulated kernel: outcomes read back from the host, not call sequences."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from tests.helpers import CLI, PF0, PF1, TWO_PFS, apply, open_host, run_cli, sim_writes
from sriov_node.sim.kernel import MARKER, SimKernel
from sriov_node.sim.nics import NICS
from sriov_node.engine.state import ApplyLock, read_state


def numvfs_writes(host, pf=PF0):
    return [(v, r) for p, v, r in sim_writes(host) if p.endswith(f"{pf}/sriov_numvfs")]


def test_apply_converges_then_a_second_apply_writes_nothing(make_host, write_config):
    host = make_host()
    path = write_config(TWO_PFS)
    report = apply(host, path)
    assert report.exit_code == 0
    assert [o.status for o in report.outcomes] == ["changed", "changed"]
    assert host.sysfs.num_vfs(PF0) == 4 and host.sysfs.num_vfs(PF1) == 2
    vfs = [host.sysfs.vf_address(PF0, i) for i in range(4)]
    assert [host.sysfs.device_driver(v) for v in vfs] == ["vfio-pci", "vfio-pci", "iavf", "iavf"]
    assert [host.sysfs.driver_override(v) for v in vfs[:2]] == ["vfio-pci", "vfio-pci"]
    count = len(sim_writes(host))
    again = apply(open_host(host.root), path)
    assert again.exit_code == 0 and again.writes == 0
    assert [o.status for o in again.outcomes] == ["unchanged", "unchanged"]
    assert len(sim_writes(host)) == count


def test_default_driver_never_grabs_vfs_meant_for_another(make_host, write_config):
    host = make_host()
    apply(host, write_config(TWO_PFS))
    log = [p for p, _, _ in sim_writes(host)]
    assert not any(p.endswith("drivers/iavf/unbind") for p in log)
    assert host.sysfs.read("sys/bus/pci/devices", PF0, "sriov_drivers_autoprobe") == "1"  # restored


def test_override_persists_so_a_reprobe_returns_to_the_wanted_driver(make_host, write_config):
    host = make_host()
    apply(host, write_config(TWO_PFS))
    vf = host.sysfs.vf_address(PF0, 0)
    host.sysfs.unbind(vf, "vfio-pci")
    host.sysfs.drivers_probe(vf)
    assert host.sysfs.device_driver(vf) == "vfio-pci"


def test_resize_goes_through_zero_and_never_hits_ebusy(make_host, write_config):
    host = make_host()
    apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n'))
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'))
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 2
    assert numvfs_writes(host) == [("'4\\n'", "ok"), ("'0\\n'", "ok"), ("'2\\n'", "ok")]


def test_rebinding_existing_vfs_without_resize(make_host, write_config):
    host = make_host()
    apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 3\n'))
    report = apply(host, write_config(
        '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 3\n[[pf.vfs]]\nrange = "2"\ndriver = "vfio-pci"\n'))
    assert report.exit_code == 0
    assert numvfs_writes(host) == [("'3\\n'", "ok")]  # no disable
    assert host.sysfs.device_driver(host.sysfs.vf_address(PF0, 2)) == "vfio-pci"
    assert host.sysfs.device_driver(host.sysfs.vf_address(PF0, 1)) == "iavf"


def test_one_failing_pf_does_not_stop_the_others(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("errno", device=PF0, attr="sriov_numvfs", errno="ENOMEM")
    report = apply(host, write_config(TWO_PFS))
    assert report.exit_code == 1
    status = {o.pci: o for o in report.outcomes}
    assert status[PF0].status == "failed" and status[PF1].status == "changed"
    assert host.sysfs.num_vfs(PF1) == 2 and host.sysfs.num_vfs(PF0) == 0
    assert "pci=realloc" in status[PF0].error and PF0 in status[PF0].error


@pytest.mark.parametrize("code,words", [
    ("ENOMEM", ["MMIO", "BIOS", "pci=realloc"]),
    ("ERANGE", ["sriov_totalvfs"]),
    ("EBUSY", ["already enabled"]),
    ("EPERM", ["assigned to virtual machines"]),
    ("EOPNOTSUPP", ["dmesg"]),
    ("EIO", ["firmware"]),
    ("EINVAL", ["rejected"]),
])
def test_every_numvfs_errno_becomes_a_sentence_with_a_fix(make_host, write_config, code, words):
    host = make_host()
    SimKernel(host.root).add_fault("errno", device=PF0, attr="sriov_numvfs", errno=code)
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n'))
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and report.exit_code == 1
    assert outcome.detail["errno"] == code and outcome.detail["hint"]
    for word in words:
        assert word in outcome.error


@pytest.mark.parametrize("nic,driver,before,want", [
    ("x710", "i40e", 0, 4),  # VFs to create
    ("x710", "i40e", 4, 2),  # i40e's remove took its VFs with it: 0 now
    ("nvme", "nvme", 4, 2),  # nvme's remove leaves its VFs enabled: a resize
    ("nvme", "nvme", 4, 0),  # ... or a disable
], ids=["create", "after-remove", "resize-left-vfs", "disable-left-vfs"])
def test_a_new_count_on_a_pf_without_driver_is_refused_before_any_write(make_host, write_config, nic, driver, before,
                                                                         want):
    """drivers/pci/iov.c: sriov_numvfs takes a new count only with a PF driver bound (ENOENT).
    `validate`, the dry run and `apply` say so, naming the key, the PF and the fix; nothing is
    written; once the driver is back, apply converges."""
    host = make_host((nic, 1, None))
    if before:
        host.sysfs.set_num_vfs(PF0, before)
    host.sysfs.unbind(PF0, driver)
    assert host.sysfs.num_vfs(PF0) == (before if nic == "nvme" else 0) != want
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = {want}\n')
    writes = len(sim_writes(host))
    words = [f"PF {PF0}", "pf[0].num_vfs", "no driver is bound to the PF", "ENOENT", "load the PF's driver"]
    for argv in (["validate"], ["apply", "--dry-run"], ["apply"]):
        proc = run_cli(*argv, root=host.root, config=path)
        assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
        for word in words:
            assert word in proc.stderr, (argv, word, proc.stderr)
    proc = run_cli("apply", "--dry-run", "--json", root=host.root, config=path)
    (pf,) = json.loads(proc.stdout)["pfs"]
    # said once, of the count the block wants (a resize's first write, 0, is no count anyone asked for)
    assert [(r["key"], r["value"], r["errno"]) for r in pf["detail"]["refusals"]] == [("num_vfs", want, "ENOENT")]
    assert len(sim_writes(host)) == writes  # nothing written
    host.sysfs.bind(PF0, driver)
    report = apply(host, path)
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == want


def _bind_pf_to(host, driver):
    host.sysfs.unbind(PF0, "i40e")
    if driver not in ("vfio-pci",):
        host.modules.load(driver)
    host.sysfs.set_driver_override(PF0, driver)
    host.sysfs.drivers_probe(PF0)
    assert host.sysfs.device_driver(PF0) == driver


@pytest.mark.parametrize("driver,enable_sriov,words", [
    ("vfio-pci", False, ["bound to vfio-pci", "enable_sriov=1"]),
    ("uio_pci_generic", None, ["bound to uio_pci_generic", "no sriov_configure", "pci-pf-stub"]),
    ("pci-stub", None, ["bound to pci-stub", "no sriov_configure", "bind the PF to its own driver"]),
])
def test_a_new_count_on_a_pf_whose_driver_cannot_make_vfs_is_refused_before_any_write(
        make_host, write_config, driver, enable_sriov, words):
    """sriov_numvfs_store answers ENOENT when the bound driver has no sriov_configure, and vfio-pci's
    does unless it was loaded with enable_sriov=1: validate, the dry run and apply say so first."""
    host = make_host(vfio_loaded=True)
    if enable_sriov is not None:
        SimKernel(host.root).vfio_enable_sriov(enable_sriov)
    _bind_pf_to(host, driver)
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    writes = len(sim_writes(host))
    for argv in (["validate"], ["apply", "--dry-run"], ["apply"]):
        proc = run_cli(*argv, root=host.root, config=path)
        assert proc.returncode == 1, (argv, proc.stdout, proc.stderr)
        for word in [f"PF {PF0}", "pf[0].num_vfs", "ENOENT"] + words:
            assert word in proc.stderr, (argv, word, proc.stderr)
    assert len(sim_writes(host)) == writes  # nothing written
    if driver == "vfio-pci":  # loaded with enable_sriov=1, the same PF passes and makes its VFs
        SimKernel(host.root).vfio_enable_sriov(True)
        proc = run_cli("validate", root=host.root, config=path)
        assert proc.returncode == 0, proc.stderr
        assert host.sysfs.write("sys/bus/pci/devices", (PF0, "sriov_numvfs"), "2\n") is None
        assert host.sysfs.num_vfs(PF0) == 2


@pytest.mark.parametrize("driver", [None, "i40e", "vfio-pci", "vfio-pci+enable_sriov", "uio_pci_generic", "pci-stub",
                                    "pci-pf-stub"])
def test_validate_refuses_a_new_count_exactly_where_the_kernel_answers_enoent(make_host, write_config, driver):
    """Every driver a PF can be bound to (its own, vfio-pci with and without enable_sriov, the stubs,
    none): `validate` refuses a new VF count exactly when the kernel's sriov_numvfs would say ENOENT."""
    import errno

    host = make_host(vfio_loaded=True)
    if driver == "vfio-pci+enable_sriov":
        SimKernel(host.root).vfio_enable_sriov(True)
        driver = "vfio-pci"
    if driver is None:
        host.sysfs.unbind(PF0, "i40e")
    elif driver != "i40e":
        _bind_pf_to(host, driver)
    refused = run_cli("validate", root=host.root, config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    try:
        host.sysfs.write("sys/bus/pci/devices", (PF0, "sriov_numvfs"), "2\n")
        answer = 0
    except OSError as exc:
        answer = exc.errno
    assert answer in (0, errno.ENOENT)
    assert (refused.returncode == 1) == (answer == errno.ENOENT), (driver, refused.stderr, answer)
    assert (refused.returncode == 1) == ("ENOENT" in refused.stderr)


def test_a_pf_on_pci_pf_stub_makes_its_vfs(make_host, write_config):
    """pci-pf-stub has sriov_configure (pci_sriov_configure_simple): no refusal, and apply converges."""
    host = make_host()
    _bind_pf_to(host, "pci-pf-stub")
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    assert run_cli("validate", root=host.root, config=path).returncode == 0
    report = apply(host, path)
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 2, report.outcomes[0].error


def test_a_pf_without_driver_keeps_its_count_without_complaint(make_host, write_config):
    """The same count is no write at all (the kernel answers it before asking for a driver)."""
    host = make_host()
    host.sysfs.unbind(PF0, "i40e")
    report = apply(host, write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 0\n'))
    assert report.exit_code == 0 and report.writes == 0


def test_pf_that_vanishes_mid_apply(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("pf_vanishes", device=PF0, attr="sriov_numvfs")
    report = apply(host, write_config(TWO_PFS))
    by_pf = {o.pci: o for o in report.outcomes}
    assert by_pf[PF0].status == "failed" and "disappeared" in by_pf[PF0].error
    assert by_pf[PF1].status == "changed"


def test_vf_that_never_appears_times_out_with_a_bound(make_host, write_config, monkeypatch):
    # Counted, not timed: every wait of the run is given a deadline within --timeout, and polls a bounded
    # number of times (a wait that ignored its deadline would poll on until the guard below stops it).
    from sriov_node.host.sysfs import Sysfs

    host = make_host()
    SimKernel(host.root).add_fault("vf_never_appears", device=PF0, vf=2)
    waits, polls = [], [0]
    wait_for = Sysfs.wait_for

    def counted(predicate, deadline, *args, **kw):
        waits.append(deadline - time.monotonic())

        def poll():
            polls[0] += 1
            assert polls[0] <= 200, "the wait polls past its deadline"
            return predicate()
        return wait_for(poll, deadline, *args, **kw)

    monkeypatch.setattr(Sysfs, "wait_for", staticmethod(counted))
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n'), timeout=0.5)
    assert report.outcomes[0].detail["errno"] == "ETIMEDOUT"
    assert "3 VF(s) exist after 0.5s" in report.outcomes[0].error
    assert waits and max(waits) <= 0.5 and 0 < polls[0] <= 200


def test_vfio_without_iommu_is_refused_naming_the_cause_and_the_fix(make_host, write_config):
    host = make_host(iommu=False)
    report = apply(host, write_config(TWO_PFS))
    refused = next(o for o in report.outcomes if o.pci == PF0)
    assert refused.status == "refused" and report.exit_code == 3
    assert "IOMMU is off" in refused.error and "intel_iommu=on" in refused.error
    assert host.sysfs.num_vfs(PF0) == 0  # refused before anything was written


def test_missing_driver_module_is_reported(make_host, write_config):
    host = make_host()
    report = apply(host, write_config(
        '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "nosuchdrv"\n'))
    # this kernel has no such module (modules.dep, modules.builtin, modules.alias): refused before any write
    assert report.outcomes[0].status == "refused" and report.exit_code == 1 and report.writes == 0
    assert 'pf[0].vfs[0].driver = "nosuchdrv": this kernel has no module nosuchdrv' in report.outcomes[0].error


def test_a_module_that_fails_to_load_at_apply_is_reported(make_host, write_config):
    from sriov_node.sim.kernel import SimKernel

    host = make_host()
    SimKernel(host.root).add_fault("module_missing", module="vfio-pci")  # modules.dep lists it, its file is gone
    report = apply(host, write_config(
        '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "vfio-pci"\n'))
    assert report.outcomes[0].status == "failed"
    assert "could not load the vfio-pci driver" in report.outcomes[0].error


def _vfio_host(make_host, write_config):
    host = make_host()
    apply(host, write_config(TWO_PFS))
    return host, write_config(TWO_PFS.replace("num_vfs = 4", "num_vfs = 3"))


def test_disabling_vfs_held_through_vfio_is_refused_naming_the_holder(make_host, write_config):
    host, smaller = _vfio_host(make_host, write_config)
    SimKernel(host.root).hold_vf(host.sysfs.vf_address(PF0, 1), 31337, "qemu-system-x86")
    before = len(sim_writes(host))
    report = apply(host, smaller)
    assert report.exit_code == 3
    refused = report.outcomes[0]
    assert refused.status == "refused"
    assert "31337" in refused.error and "qemu-system-x86" in refused.error and "VF 1" in refused.error
    assert len(sim_writes(host)) == before and host.sysfs.num_vfs(PF0) == 4


def test_disabling_vfs_whose_netdev_left_the_host_namespace_is_refused(make_host, write_config):
    host, smaller = _vfio_host(make_host, write_config)
    SimKernel(host.root).move_netdev_out(host.sysfs.vf_address(PF0, 3))
    report = apply(host, smaller)
    assert report.exit_code == 3
    assert "VF 3" in report.outcomes[0].error and "network namespace" in report.outcomes[0].error


def test_rebinding_a_held_vfio_vf_is_refused(make_host, write_config):
    host, _ = _vfio_host(make_host, write_config)
    SimKernel(host.root).hold_vf(host.sysfs.vf_address(PF0, 0), 555, "qemu-kvm")
    report = apply(host, write_config(TWO_PFS.replace('driver = "vfio-pci"', 'driver = "iavf"')))
    assert report.exit_code == 3 and "555" in report.outcomes[0].error
    assert host.sysfs.device_driver(host.sysfs.vf_address(PF0, 0)) == "vfio-pci"


def test_failed_apply_restores_autoprobe_and_the_next_run_finishes(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", errno="EINVAL")
    path = write_config(TWO_PFS)
    assert apply(host, path).outcomes[0].status == "failed"  # vfio-pci refuses the VFs
    assert host.sysfs.read("sys/bus/pci/devices", PF0, "sriov_drivers_autoprobe") == "1"
    assert [host.sysfs.device_driver(host.sysfs.vf_address(PF0, i)) for i in (2, 3)] == ["iavf", "iavf"]
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n'))
    assert report.exit_code == 0


def test_force_disables_once_the_holder_lets_go(make_host, write_config):
    host, smaller = _vfio_host(make_host, write_config)
    sim = SimKernel(host.root)
    sim.hold_vf(host.sysfs.vf_address(PF0, 0), 4242)
    threading.Timer(0.3, sim.release, args=(4242,)).start()
    report = apply(host, smaller, force=True)
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 3


def test_state_file_records_the_outcome(make_host, write_config):
    host = make_host()
    path = write_config(TWO_PFS)
    apply(host, path)
    state = read_state(host)
    assert state["result"] == "converged" and state["config"] == path
    assert state["pfs"][PF0]["status"] == "changed"
    assert len(state["config_sha256"]) == 64


def test_snapshot_root_is_read_only(make_host, write_config, tmp_path):
    host = make_host()
    snap = tmp_path / "snapshot"
    shutil.copytree(host.root, snap, symlinks=True)
    os.unlink(snap / MARKER)
    path = write_config(TWO_PFS)
    result = run_cli("apply", root=str(snap), config=path)
    assert result.returncode == 1 and "captured tree" in result.stderr
    dry = run_cli("apply", "--dry-run", "--json", root=str(snap), config=path)
    assert dry.returncode == 0 and json.loads(dry.stdout)["actions"]


def test_three_concurrent_applies_serialize(make_host, write_config):
    host = make_host()
    path = write_config(TWO_PFS)
    SimKernel(host.root).add_fault("delay", device=PF0, attr="sriov_numvfs", seconds=0.3)
    procs = [subprocess.Popen([CLI, "--root", host.root, "--config", path, "apply", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    writes = sorted(json.loads(out)["writes"] for out, _ in outs)
    assert writes[:2] == [0, 0] and writes[2] > 0  # one did the work; the others found it converged
    assert all(r == "ok" for _, _, r in sim_writes(host))


def test_lock_wait_has_a_deadline(make_host, write_config):
    host = make_host()
    path = write_config(TWO_PFS)
    with ApplyLock(host, timeout=1):
        result = run_cli("apply", "--timeout", "0.3", root=host.root, config=path)
    assert result.returncode == 1 and "another sriov-node run" in result.stderr
    assert sim_writes(host) == []


def test_apply_killed_midway_is_finished_by_the_next_apply(make_host, write_config):
    host = make_host()
    path = write_config(TWO_PFS)
    apply(host, write_config(TWO_PFS.replace("num_vfs = 4", "num_vfs = 6")))
    SimKernel(host.root).add_fault("delay", device=PF0, attr="sriov_numvfs", nth=2, seconds=30)
    proc = subprocess.Popen([CLI, "--root", host.root, "--config", path, "apply"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not any(p.endswith("sriov_numvfs") and v == "'0\\n'" for p, v, _ in sim_writes(host)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # now inside the slow write of "4"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert host.sysfs.num_vfs(PF0) == 0  # killed between the disable and the enable
    SimKernel(host.root).recover()  # the write it was inside is undone first
    SimKernel(host.root).clear_faults()
    report = apply(open_host(host.root), path)
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 4
    assert read_state(host)["result"] == "converged"


def test_pf_bound_to_vfio_pci_points_at_enable_sriov(make_host, write_config):
    host = make_host(vfio_loaded=True)
    host.sysfs.unbind(PF0, "i40e")
    host.sysfs.set_driver_override(PF0, "vfio-pci")
    host.sysfs.drivers_probe(PF0)
    assert host.sysfs.device_driver(PF0) == "vfio-pci"
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'))
    # refused before the write (the kernel's ENOENT, from preflight), not failed by it
    assert report.outcomes[0].status == "refused" and report.writes == 0
    assert [r["errno"] for r in report.outcomes[0].detail["refusals"]] == ["ENOENT"]
    assert "enable_sriov=1" in report.outcomes[0].error


def test_a_numvfs_write_the_kernel_silently_ignored_is_written_again(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("write_ignored", device=PF0, attr="sriov_numvfs", nth=1)
    report = apply(host, write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n'))
    assert report.exit_code == 0 and host.sysfs.num_vfs(PF0) == 4
    assert numvfs_writes(host) == [("'4\\n'", "ok"), ("'4\\n'", "ok")]


@pytest.mark.parametrize("model", sorted(NICS))  # every simulated NIC, so every VF driver the simulator has
def test_the_probe_grace_is_waited_only_for_drivers_that_may_still_let_a_vf_go(make_host, write_config, monkeypatch,
                                                                               model):
    """After VFs are made (or probed) with their default driver, a run waits out the probe grace
    only when that driver may let a VF go after binding it (nvme's asynchronous reset work), or is
    not known to the driver table (hisi_zip here): every network VF driver binds synchronously
    and stays bound, so a run that made igbvf or iavf VFs does not sleep a second for nothing."""
    from sriov_node import drivers
    from sriov_node.engine import execute

    host = make_host((model, 1, None))
    host.sysfs.probe_grace = 30.0  # the live kernel's grace, made long enough to tell apart
    slept = []
    monkeypatch.setattr(execute.time, "sleep", lambda seconds: slept.append(seconds))
    from sriov_node.config import load_config
    from sriov_node.engine.reconcile import reconcile

    report = reconcile(host, load_config(write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')))
    assert report.exit_code == 0, report.outcomes[0].error
    vf_driver = host.sysfs.device_driver(host.sysfs.vf_address(PF0, 0))
    row = drivers.driver(vf_driver)
    graced = any(seconds > 20 for seconds in slept)
    assert graced == (row is None or row.async_release), (model, vf_driver, slept)
