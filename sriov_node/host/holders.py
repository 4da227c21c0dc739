"""Who is using a VF: an open /dev/vfio group (or /dev/uioN), or a netdev moved out of the host namespace."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from sriov_node.host import Host
from sriov_node.host.paths import PCI_DEVICES
from sriov_node.model import VfState, is_override_only


def _vfio_nodes(host: Host, vf: VfState) -> List[str]:
    nodes = []
    if vf.iommu_group:
        nodes += [f"/dev/vfio/{vf.iommu_group}", f"/dev/vfio/noiommu-{vf.iommu_group}"]
    # iommufd cdev: <VF>/vfio-dev/vfioN -> /dev/vfio/devices/vfioN
    for name in host.sysfs.listdir(PCI_DEVICES, vf.pci, "vfio-dev"):
        nodes.append(f"/dev/vfio/devices/{name}")
    return nodes


@dataclass(frozen=True)
class Holder:
    """One reason a VF is in use: a process with its device node open, or its netdev moved away."""

    vf: int
    node: Optional[str] = None  # "/dev/vfio/12", "/dev/uio0"; None: the netdev left the host namespace
    pid: Optional[str] = None
    comm: Optional[str] = None

    def clause(self) -> str:
        """In a sentence: "/dev/vfio/12 is open by pid 4242 (qemu-kvm)"."""
        if self.node is None:
            return "its netdev is not in the host network namespace (moved into a pod or container)"
        return f"{self.node} is open by pid {self.pid} ({self.comm})"

    def who(self) -> str:
        """As short as a status line wants it: "pid 4242 (qemu-kvm)", "netdev in another network namespace"."""
        return "netdev in another network namespace" if self.node is None else f"pid {self.pid} ({self.comm})"


def holders_of(host: Host, vfs: Sequence[VfState]) -> List[Holder]:
    """Who holds each of `vfs` (observed with their netdevs and IOMMU group). Cheap for VFs on a
    netdev driver (two directory reads each); /proc is read only when one is on vfio or uio."""
    found: List[Holder] = []
    watched: Dict[str, VfState] = {}
    for vf in vfs:
        if is_override_only(vf.driver) or host.sysfs.isdir(PCI_DEVICES, vf.pci, "vfio-dev"):
            for node in _vfio_nodes(host, vf):
                watched[node] = vf
        for name in host.sysfs.listdir(PCI_DEVICES, vf.pci, "uio"):  # uio_pci_generic: DPDK opens /dev/uioN
            watched[f"/dev/{name}"] = vf
        if vf.netdev_elsewhere:
            found.append(Holder(vf.index))
    if watched:
        for pid in host.sysfs.listdir("proc"):
            if not pid.isdigit():
                continue
            for fd in host.sysfs.listdir("proc", pid, "fd"):
                try:
                    target = os.readlink(host.path("proc", pid, "fd", fd))
                except (OSError, ValueError):
                    continue
                vf = watched.get(target)
                if vf is not None:
                    comm = host.sysfs.read("proc", pid, "comm") or "?"
                    found.append(Holder(vf.index, target, pid, comm))
    return found


def holders_by_vf(host: Host, vfs: Sequence[VfState]) -> Dict[int, List[str]]:
    """VF index -> why it is in use, one clause each ("/dev/vfio/12 is open by pid 4242 (qemu-kvm)").

    Disabling or unbinding would block on (or yank) each of them.
    """
    found: Dict[int, List[str]] = {}
    for holder in holders_of(host, vfs):
        found.setdefault(holder.vf, []).append(holder.clause())
    return found


def held_by(host: Host, vfs: Sequence[VfState]) -> Dict[int, str]:
    """VF index -> who holds it, shortly ("pid 4242 (qemu-kvm)"; "netdev in another network namespace")."""
    found: Dict[int, List[str]] = {}
    for holder in holders_of(host, vfs):
        if holder.who() not in found.setdefault(holder.vf, []):
            found[holder.vf].append(holder.who())
    return {vf: " and ".join(who) for vf, who in found.items()}


def vf_holders(host: Host, vfs: Sequence[VfState]) -> List[str]:
    """One sentence per VF in use: "VF 1 (0000:20:02.1): /dev/vfio/12 is open by pid 4242 (qemu-kvm)"."""
    by_vf = holders_by_vf(host, vfs)
    pci = {vf.index: vf.pci for vf in vfs}
    return [f"VF {i} ({pci[i]}): {'; '.join(why)}" for i, why in sorted(by_vf.items())]
