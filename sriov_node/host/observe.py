"""A read-only snapshot of the kernel's SR-IOV state (works on live roots and on captured trees)."""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from sriov_node.host.core import PCI_DEVICES, PCI_DRIVERS, Host
from sriov_node.model import HostState, PfState, VfState

_VIRTFN_RE = re.compile(r"^virtfn(\d+)$")


def _pci_id(host: Host, pci: str, attr: str) -> Optional[str]:
    value = host.read(PCI_DEVICES, pci, attr)
    if not value:
        return None
    value = value.strip().lower()
    return value[2:] if value.startswith("0x") else value


def _netdevs(host: Host, pci: str) -> Tuple[Tuple[str, ...], bool]:
    """(netdev names visible here, net/ exists but is empty)."""
    if not host.isdir(PCI_DEVICES, pci, "net"):
        return (), False
    names = tuple(sorted(host.listdir(PCI_DEVICES, pci, "net")))
    return names, not names


def _permanent_mac(host: Host, ifname: str) -> Optional[str]:
    """The MAC when sysfs says it is the permanent one (addr_assign_type 0 or unknown)."""
    assign = host.read("sys/class/net", ifname, "addr_assign_type")
    if assign not in (None, "0"):
        return None
    mac = host.read("sys/class/net", ifname, "address")
    return mac.lower() if mac else None


def observe_vf(host: Host, index: int, pci: str) -> VfState:
    netdevs, elsewhere = _netdevs(host, pci)
    return VfState(
        index=index,
        pci=pci,
        driver=host.device_driver(pci),
        driver_override=host.driver_override(pci),
        netdevs=netdevs,
        netdev_elsewhere=elsewhere and host.device_driver(pci) is not None,
        iommu_group=host.iommu_group(pci),
    )


def observe_pf(host: Host, pci: str, *, netlink_macs: bool = False) -> PfState:
    vfs: List[VfState] = []
    for entry in host.listdir(PCI_DEVICES, pci):
        m = _VIRTFN_RE.match(entry)
        if not m:
            continue
        vf_pci = host.vf_address(pci, int(m.group(1)))
        if vf_pci:
            vfs.append(observe_vf(host, int(m.group(1)), vf_pci))
    vfs.sort(key=lambda v: v.index)
    netdevs, _ = _netdevs(host, pci)
    mac = None
    if netdevs:
        mac = _permanent_mac(host, netdevs[0])
        if mac is None and netlink_macs:
            from sriov_node.host.netlink import permanent_mac

            mac = permanent_mac(netdevs[0])
    return PfState(
        pci=pci,
        vendor=_pci_id(host, pci, "vendor"),
        device=_pci_id(host, pci, "device"),
        driver=host.device_driver(pci),
        netdevs=netdevs,
        mac=mac,
        total_vfs=host.total_vfs(pci),
        num_vfs=host.num_vfs(pci),
        autoprobe=host.autoprobe(pci),
        vf_device=_pci_id(host, pci, "sriov_vf_device"),
        vfs=tuple(vfs),
    )


def netdev_owners(host: Host) -> Dict[str, str]:
    """netdev name -> PCI address of the function that owns it (for error messages)."""
    owners: Dict[str, str] = {}
    for ifname in host.listdir("sys/class/net"):
        pci = host.link_name("sys/class/net", ifname, "device")
        if pci:
            owners[ifname] = pci
    return owners


def observe(host: Host, *, netlink_macs: bool = False) -> HostState:
    """Every SR-IOV PF (a PCI function with sriov_totalvfs) and its VFs."""
    devices = sorted(host.listdir(PCI_DEVICES))
    pfs = [
        observe_pf(host, pci, netlink_macs=netlink_macs)
        for pci in devices
        if host.exists(PCI_DEVICES, pci, "sriov_totalvfs")
    ]
    return HostState(
        pfs=tuple(pfs),
        pci_devices=frozenset(devices),
        netdev_owners=netdev_owners(host),
        pci_drivers=frozenset(host.listdir(PCI_DRIVERS)),
        iommu_groups=bool(host.listdir("sys/kernel/iommu_groups")),
    )
