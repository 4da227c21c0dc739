"""Every errno the kernel can answer a write with, as a sentence a person can act on."""

from __future__ import annotations

import errno as E
import os
from typing import Optional, Tuple

from sriov_node.drivers import makes_vfs, no_vfs_why

IOMMU_HINT = (
    "turn the IOMMU on: enable VT-d/AMD-Vi in the BIOS and boot with intel_iommu=on iommu=pt "
    "(AMD: the IOMMU is on by default; drop amd_iommu=off, add iommu=pt), e.g. in GRUB_CMDLINE_LINUX of "
    "/etc/default/grub, then update-grub and reboot (sriov-node check --fix does the boot loader part)"
)


def numvfs_error(code: int, value: int, *, total: Optional[int], pf_driver: Optional[str]) -> Tuple[str, str]:
    """(what happened, how to fix it) for a failed write of sriov_numvfs."""
    if code == E.ERANGE:
        return (f"cannot create {value} VFs: sriov_totalvfs is {total}",
                f"set num_vfs to at most {total} (the PF driver or firmware caps it; mlx5: mlxconfig NUM_OF_VFS)")
    if code == E.ENOENT:
        if pf_driver is None:
            return ("no driver is bound to the PF, so the kernel cannot configure SR-IOV",
                    "load the PF's driver (modprobe it, or check dmesg for why its probe failed) and re-run")
        if pf_driver == "vfio-pci":
            return ("the PF is bound to vfio-pci, which creates VFs only when loaded with enable_sriov=1",
                    "load vfio-pci with enable_sriov=1 (options vfio-pci enable_sriov=1 in /etc/modprobe.d), "
                    "or bind the PF to its network driver")
        if makes_vfs(pf_driver) is False:  # a stub, or a VF driver (the driver table's answer)
            return (f"the PF is bound to {pf_driver}, which has no way to create VFs ({no_vfs_why(pf_driver)})",
                    "bind the PF to its own driver (clear its driver_override, unbind it, write it to "
                    "/sys/bus/pci/drivers_probe), or to pci-pf-stub when it has none")
        return (f"the PF driver {pf_driver} does not support configuring SR-IOV through sysfs",
                f"use {pf_driver}'s own VF module parameter (e.g. max_vfs) or a driver version that supports sriov_numvfs")
    if code == E.ENOMEM:
        return ("the kernel could not give the VFs MMIO space or PCI bus numbers",
                "enable SR-IOV ('SR-IOV Support', 'SR-IOV Global Enable', ARI) in the BIOS, or boot with pci=realloc "
                "(pci=assign-busses when bus numbers run out); dmesg shows 'not enough MMIO resources for SR-IOV'")
    if code == E.EBUSY:
        if value == 0:
            return ("the PF driver refused to disable VFs that are assigned to virtual machines",
                    "detach the VFs from their VMs first")
        return ("VFs are already enabled and the kernel cannot resize them in place",
                "something else changed sriov_numvfs at the same time; re-run sriov-node apply")
    if code == E.EPERM:
        return ("the PF driver refused: VFs are assigned to virtual machines",
                "detach the VFs from their VMs first")
    if code == E.EOPNOTSUPP:
        return ("the PF driver refused to enable SR-IOV (device in safe mode, not SR-IOV capable, or eswitch state)",
                "check dmesg for the driver's reason")
    if code == E.EIO:
        return ("the device's SR-IOV capability failed to initialise",
                "check dmesg; the NIC firmware may need an update or SR-IOV enabled in its NVM")
    if code == E.EINVAL:
        return (f"the kernel rejected {value} as a VF count", "report this: sriov-node writes a plain decimal")
    if code == E.ENODEV:
        return ("the PF disappeared during the write (hot-unplug or driver reset)",
                "check that the device is still present (lspci) and re-run")
    if code == E.ETIMEDOUT:
        return ("the write did not complete in time", "check dmesg for a device stuck in reset")
    if code == E.EEXIST:
        return ("the kernel could not add a VF: its virtfn link is still there (a VF removed by hand leaves it)",
                "re-run sriov-node apply (it removes and rescans the PF to drop the link), or by hand: "
                "echo 1 > /sys/bus/pci/devices/PF/remove; echo 1 > /sys/bus/pci/rescan")
    return (f"writing sriov_numvfs={value} failed: {os.strerror(code)}", "check dmesg for the PF driver's message")


def bind_error(code: int, driver: str, *, iommu_group: Optional[str], bound: Optional[str] = None) -> Tuple[str, str]:
    """(what happened, how to fix it) when a VF would not bind to `driver`; `bound`: its driver read after."""
    if driver == "vfio-pci" and iommu_group is None:
        return ("vfio-pci needs an IOMMU group, and this VF has none: the IOMMU is off", IOMMU_HINT)
    if code == E.EINVAL:
        return (f"{driver} refused the VF in its probe",
                f"check dmesg for '{driver} ... probe with driver {driver} failed'")
    if code == E.ENODEV:
        return (f"{driver} does not match this VF",
                f"make sure {driver} is the right driver for this device (lspci -nn shows its ID)")
    if code == E.EAGAIN:
        return (f"{driver} deferred its probe (a resource it needs is not ready)", "re-run once the system has settled")
    if code == E.EBUSY:
        if bound is not None:
            return (f"{driver} cannot bind the VF (EBUSY): it is bound to {bound}",
                    f"another tool bound it meanwhile; unbind it from {bound} or re-run sriov-node apply")
        return (f"{driver} refused the VF: its probe answered EBUSY (the device, or a resource the driver "
                "needs for it, is busy)",
                f"check dmesg for {driver}'s message about the VF; re-run once what holds it is released")
    return (f"{driver} failed to probe the VF: {os.strerror(code)}", f"check dmesg for {driver}'s message")


def default_probe_error(code: int, driver: str) -> Tuple[str, str]:
    """(what happened, how to fix it) when the kernel's default driver does not bind a VF."""
    if code == E.ENODEV:
        return (f"the kernel's default driver {driver} does not take this VF",
                f"check dmesg for {driver}'s messages; or name a driver for the VF (driver = \"...\") or \"none\"")
    if code == E.EAGAIN:
        return (f"the kernel's default driver {driver} deferred its probe", "re-run once the system has settled")
    return (f"the kernel's default driver {driver} failed to probe the VF: {os.strerror(code)}",
            f"check dmesg for '{driver} ... probe ... failed'; or name a driver for the VF (driver = \"...\") or \"none\"")


def write_error(attr: str, code: int) -> Tuple[str, str]:
    """Fallback for other attributes (driver_override, sriov_drivers_autoprobe, unbind)."""
    if code == E.ENODEV:
        return (f"writing {attr} failed: the device is gone or not bound as expected", "re-run sriov-node apply")
    if code == E.EACCES:
        return (f"{attr} is not writable here", "run sriov-node as root")
    return (f"writing {attr} failed: {os.strerror(code)}", "check dmesg")


def load_error(driver: str, detail: str) -> Tuple[str, str]:
    return (f"could not load the {driver} driver: {detail}",
            f"install the kernel module that provides {driver} (e.g. linux-modules-extra) or fix the driver name")


SETTING_WORDS = {"mac": "a VF MAC", "vlan": "VF VLANs", "rate": "VF tx rate limits", "spoofchk": "VF spoof checking",
                 "link_state": "VF link state", "trust": "VF trust"}


def vf_setting_error(code: int, attr: str, value: object, *, pf_driver: Optional[str],
                     eswitch: Optional[str]) -> Tuple[str, str]:
    """(what happened, how to fix it) when the PF driver refuses one VF setting."""
    from sriov_node.engine.compare import show_setting

    drv = pf_driver or "the PF driver"
    shown = show_setting(attr, value)
    what = SETTING_WORDS.get(attr, attr)
    if code == E.EOPNOTSUPP:
        if eswitch == "switchdev":
            return (f"{drv} refuses {what} in switchdev mode: there VF settings go through devlink "
                    "(port function, rate) and the representor",
                    "set them with devlink on the representor, or use eswitch_mode = \"legacy\"")
        return (f"{drv} does not support {what}", f"drop {attr} for this PF's VFs (the driver cannot do it)")
    if code == E.EPROTONOSUPPORT:
        return (f"{drv} supports only 802.1Q VF VLANs, not {shown}",
                "use vlan_proto = \"802.1Q\" (802.1ad needs mlx5, or ice in double-VLAN mode)")
    if code == E.EINVAL:
        if attr == "rate":
            return (f"{drv} refused {shown} (min_tx_rate unsupported, a max below its floor, a rate above the "
                    "link speed, or, on ice, the VFs' min_tx_rate together above it)",
                    "check dmesg; on i40e/igb/ixgbe leave min_tx_rate out; on ice keep the VFs' min_tx_rate "
                    "within the link speed")
        if attr == "mac":
            return (f"{drv} refused {shown}", "use a unicast, locally administered MAC (02:...)")
        return (f"{drv} refused {shown}", "check dmesg for the driver's reason")
    if code == E.EPERM:
        return (f"{drv} refused {what}: not permitted", "run sriov-node as root (CAP_NET_ADMIN)")
    return (f"setting {what} failed: {os.strerror(code)}", "check dmesg for the driver's reason")


def netlink_error(what: str, code: int) -> Tuple[str, str]:
    if code == E.EPERM:
        return (f"{what}: not permitted", "run sriov-node as root (CAP_NET_ADMIN)")
    if code == E.EINVAL:
        return (f"{what}: the kernel refused the value", "check the device's limits (ip -d link show) and dmesg")
    if code == E.EOPNOTSUPP:
        return (f"{what}: the driver does not support it", "check that the PF's driver supports this")
    return (f"{what}: {os.strerror(code)}", "check dmesg")


def eswitch_error(code: int, mode: str, pf_driver: Optional[str]) -> Tuple[str, str]:
    drv = pf_driver or "the PF driver"
    if code == E.EOPNOTSUPP:
        return (f"{drv} refused eswitch mode {mode} (it has no switchdev support, or its state forbids the change now)",
                "check dmesg; i40e, igb and ixgbe have no switchdev; ice needs no VFs while switching, "
                "old mlx5 needs VFs created and unbound")
    if code == E.ENODEV:
        return (f"the PF has no devlink instance ({drv})", "its driver does not register with devlink: drop eswitch_mode")
    if code == E.EBUSY:
        return (f"{drv} is busy (E-Switch busy, a firmware reset, or VFs still bound)", "re-run in a moment; check dmesg")
    if code == E.EPERM:
        return (f"{drv} refused: not permitted", "run sriov-node as root (CAP_NET_ADMIN)")
    return (f"setting eswitch mode {mode} failed: {os.strerror(code)}", "check dmesg")
