"""The simulated kernel obeys docs/kernel-sriov-spec rules (numvfs, binding, vfio, faults)."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from sriov_node.host import PCI_DEVICES
from sriov_node.host.observe import observe
from sriov_node.sim.kernel import SimKernel

PF0 = "0000:20:00.0"


def write_numvfs(host, value: str, pf: str = PF0):
    host.sysfs.write(PCI_DEVICES, (pf, "sriov_numvfs"), value)


def errno_of(fn, *args) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


@pytest.mark.parametrize("text", ["abc", "-1", "70000\n", "08", " 4", "4\n\n", "4x", "0x", "+"])
def test_numvfs_parse_errors_are_einval(make_host, text):
    host = make_host()
    assert errno_of(write_numvfs, host, text) == errno.EINVAL
    assert host.sysfs.num_vfs(PF0) == 0


@pytest.mark.parametrize("text,count", [("010", 8), ("0x4\n", 4), ("+3", 3), ("2\0junk", 2)])
def test_numvfs_base0_parsing(make_host, text, count):
    host = make_host()
    write_numvfs(host, text)
    assert host.sysfs.num_vfs(PF0) == count


def test_numvfs_above_total_is_erange(make_host):
    host = make_host()
    assert errno_of(write_numvfs, host, "65\n") == errno.ERANGE


def test_resize_without_zero_is_ebusy_and_equal_is_noop(make_host):
    host = make_host()
    write_numvfs(host, "4\n")
    assert errno_of(write_numvfs, host, "2\n") == errno.EBUSY
    write_numvfs(host, "4\n")  # same value: success, nothing changes
    assert host.sysfs.num_vfs(PF0) == 4


def test_vfs_and_links_exist_when_the_write_returns(make_host):
    host = make_host()
    write_numvfs(host, "3\n")
    for i in range(3):
        vf = host.sysfs.vf_address(PF0, i)
        assert vf is not None
        link = os.readlink(host.path(PCI_DEVICES, PF0, f"virtfn{i}"))
        assert link == f"../{vf}"
        assert os.readlink(host.path(PCI_DEVICES, vf, "physfn")) == f"../{PF0}"
        assert host.sysfs.device_driver(vf) == "iavf"  # autoprobe on: the default VF driver binds
    assert [host.sysfs.vf_address(PF0, i) for i in range(3)] == ["0000:20:02.0", "0000:20:02.1", "0000:20:02.2"]


def test_disable_removes_vfs(make_host):
    host = make_host()
    write_numvfs(host, "2\n")
    vf0 = host.sysfs.vf_address(PF0, 0)
    write_numvfs(host, "0\n")
    assert host.sysfs.vf_address(PF0, 0) is None and not host.sysfs.device_exists(vf0)


def test_no_pf_driver_is_enoent_but_equal_value_still_succeeds(make_host):
    host = make_host()
    host.sysfs.unbind(PF0, "i40e")
    write_numvfs(host, "0\n")  # N == current is checked before the driver
    assert errno_of(write_numvfs, host, "2\n") == errno.ENOENT


def test_missing_mmio_is_enomem(make_host):
    host = make_host(mmio=False)
    assert errno_of(write_numvfs, host, "1\n") == errno.ENOMEM


def test_bios_off_hides_the_sriov_files(make_host):
    host = make_host(bios_sriov=False)
    assert not host.sysfs.exists(PCI_DEVICES, PF0, "sriov_totalvfs")
    assert observe(host).pfs == ()


def test_igb_reduces_totalvfs_and_unbind_restores_it(make_host):
    host = make_host(("i350", 2, None))
    pf = "0000:20:00.0"
    assert host.sysfs.read_int(PCI_DEVICES, pf, "sriov_totalvfs") == 7
    write_numvfs(host, "4\n", pf)
    assert [host.sysfs.vf_address(pf, i) for i in range(4)] == ["0000:20:10.0", "0000:20:10.4", "0000:20:11.0", "0000:20:11.4"]
    SimKernel(host.root).add_fault("pf_leaves_sriov_enabled", device=pf)
    host.sysfs.unbind(pf, "igb")
    assert host.sysfs.read_int(PCI_DEVICES, pf, "sriov_totalvfs") == 8
    assert host.sysfs.num_vfs(pf) == 4  # "driver left SR-IOV enabled after remove"


def test_pf_driver_remove_disables_sriov_first(make_host):
    host = make_host()
    write_numvfs(host, "2\n")
    vf = host.sysfs.vf_address(PF0, 0)
    host.sysfs.unbind(PF0, "i40e")
    assert host.sysfs.num_vfs(PF0) == 0 and not host.sysfs.device_exists(vf)


def test_override_to_a_driver_that_does_not_know_the_device_fails_its_probe(make_host):
    host = make_host()
    write_numvfs(host, "1\n")
    vf = host.sysfs.vf_address(PF0, 0)
    host.sysfs.unbind(vf, "iavf")
    host.sysfs.set_driver_override(vf, "igb")
    host.sysfs.drivers_probe(vf)
    assert host.sysfs.device_driver(vf) is None
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("igb", "bind"), f"{vf}\n") == errno.ENODEV
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("nosuch", "bind"), f"{vf}\n") == errno.ENOENT


def test_bus_autoprobe_off_leaves_new_vfs_unprobed(make_host):
    host = make_host()
    host.sysfs.write("sys/bus/pci", ("drivers_autoprobe",), "0")
    write_numvfs(host, "1\n")
    assert host.sysfs.device_driver(host.sysfs.vf_address(PF0, 0)) is None


def held_vfio_vf(make_host, pid: int):
    """A host whose VF 0 of PF0 is bound to vfio-pci and held open by `pid`."""
    host = make_host(vfio_loaded=True)
    sim = SimKernel(host.root)
    host.sysfs.set_autoprobe(PF0, False)
    write_numvfs(host, "1\n")
    vf = host.sysfs.vf_address(PF0, 0)
    host.sysfs.set_driver_override(vf, "vfio-pci")
    host.sysfs.drivers_probe(vf)
    sim.hold_vf(vf, pid)
    return host, sim, vf


def release_once_writing(host, sim, pid: int, order: list) -> threading.Thread:
    """A thread that lets `pid` go once a write is under way (the model's lock is taken), and
    notes "released" in `order` first."""
    from sriov_node.locks import FileLock, LockTimedOut
    from sriov_node.sim.tree import LOCK

    def run():
        writing = threading.Event()
        while not writing.is_set():
            try:
                with FileLock(os.path.join(host.root, LOCK), timeout=0):
                    pass
            except LockTimedOut:
                writing.set()
            else:
                writing.wait(0.005)
        order.append("released")
        sim.release(pid)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_unbinding_a_held_vfio_vf_blocks_until_released(make_host):
    host, sim, vf = held_vfio_vf(make_host, 99)
    sim.hold_blocks_for(0.1)  # while held, the write never completes: the model gives up instead
    assert errno_of(host.sysfs.unbind, vf, "vfio-pci") == errno.EDEADLK
    assert host.sysfs.device_driver(vf) == "vfio-pci"
    sim.hold_blocks_for(60)
    order: list = []
    releaser = release_once_writing(host, sim, 99, order)
    host.sysfs.unbind(vf, "vfio-pci")
    order.append("unbound")
    releaser.join()
    assert order == ["released", "unbound"] and host.sysfs.device_driver(vf) is None




def test_autoprobe_off_leaves_vfs_unbound_until_override(make_host):
    host = make_host(vfio_loaded=True)
    host.sysfs.set_autoprobe(PF0, False)
    write_numvfs(host, "2\n")
    vf = host.sysfs.vf_address(PF0, 0)
    assert host.sysfs.device_driver(vf) is None
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("iavf", "bind"), f"{vf}\n") == errno.ENODEV
    host.sysfs.drivers_probe(vf)  # no override, autoprobe off: success, still unbound
    assert host.sysfs.device_driver(vf) is None
    host.sysfs.set_driver_override(vf, "vfio-pci")
    host.sysfs.drivers_probe(vf)
    assert host.sysfs.device_driver(vf) == "vfio-pci"
    group = host.sysfs.link_name(PCI_DEVICES, vf, "iommu_group")
    assert os.path.exists(os.path.join(host.root, "dev/vfio", group))


def test_driver_override_read_and_clear(make_host):
    host = make_host()
    write_numvfs(host, "1\n")
    vf = host.sysfs.vf_address(PF0, 0)
    assert host.sysfs.read(PCI_DEVICES, vf, "driver_override") == "(null)"
    host.sysfs.write(PCI_DEVICES, (vf, "driver_override"), "vfio-pci\nrest")
    assert host.sysfs.driver_override(vf) == "vfio-pci"
    host.sysfs.write(PCI_DEVICES, (vf, "driver_override"), "")  # zero-length write: no-op
    assert host.sysfs.driver_override(vf) == "vfio-pci"
    host.sysfs.set_driver_override(vf, None)  # "\n" clears
    assert host.sysfs.read(PCI_DEVICES, vf, "driver_override") == "(null)"
    assert errno_of(host.sysfs.write, PCI_DEVICES, (vf, "driver_override"), "x" * 4095) == errno.EINVAL


def test_bind_and_unbind_errors(make_host):
    host = make_host()
    write_numvfs(host, "1\n")
    vf = host.sysfs.vf_address(PF0, 0)
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("iavf", "bind"), f"{vf}\n") == errno.EBUSY
    assert errno_of(host.sysfs.unbind, vf, "i40e") == errno.ENODEV
    host.sysfs.unbind(vf, "iavf")
    assert errno_of(host.sysfs.unbind, vf, "iavf") == errno.ENODEV
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("iavf", "bind"), "20:02.0\n") == errno.ENODEV


def test_vfio_without_iommu_group_fails_probe(make_host):
    host = make_host(iommu=False, vfio_loaded=True)
    write_numvfs(host, "1\n")
    vf = host.sysfs.vf_address(PF0, 0)
    host.sysfs.unbind(vf, "iavf")
    host.sysfs.set_driver_override(vf, "vfio-pci")
    host.sysfs.drivers_probe(vf)  # probe failure is swallowed by drivers_probe
    assert host.sysfs.device_driver(vf) is None
    assert errno_of(host.sysfs.write, "sys/bus/pci/drivers", ("vfio-pci", "bind"), f"{vf}\n") == errno.EINVAL


def test_read_only_attribute_is_eacces(make_host):
    host = make_host()
    assert errno_of(host.sysfs.write, PCI_DEVICES, (PF0, "sriov_totalvfs"), "8\n") == errno.EACCES


def test_injected_errno_on_nth_write(make_host):
    host = make_host()
    SimKernel(host.root).add_fault("errno", device=PF0, attr="sriov_numvfs", nth=2, errno="EIO")
    write_numvfs(host, "1\n")
    assert errno_of(write_numvfs, host, "0\n") == errno.EIO
    write_numvfs(host, "0\n")


def test_disable_blocks_while_a_vfio_group_is_held(make_host):
    host, sim, _ = held_vfio_vf(make_host, 4242)
    sim.hold_blocks_for(0.1)
    assert errno_of(write_numvfs, host, "0\n") == errno.EDEADLK  # never while held
    assert host.sysfs.num_vfs(PF0) == 1
    sim.hold_blocks_for(60)
    order: list = []
    releaser = release_once_writing(host, sim, 4242, order)
    write_numvfs(host, "0\n")  # blocks like vfio-pci's remove until the holder lets go
    order.append("disabled")
    releaser.join()
    assert order == ["released", "disabled"]
    assert host.sysfs.num_vfs(PF0) == 0


def test_write_log_records_results(make_host):
    host = make_host()
    write_numvfs(host, "1\n")
    with pytest.raises(OSError):
        write_numvfs(host, "99\n")
    log = SimKernel(host.root).write_log()
    assert [(p.rsplit("/", 1)[-1], r) for p, _, r in log] == [("sriov_numvfs", "ok"), ("sriov_numvfs", "ERANGE")]
