"""`sriov-node status`: the observed state, and where a config exists, how it compares."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from sriov_node.model import DesiredState, HostState
from sriov_node.plan import plan_pf
from sriov_node.resolve import resolve


def build_status(observed: HostState, desired: Optional[DesiredState]) -> Dict[str, Any]:
    targets = {}
    notices: List[str] = []
    if desired is not None:
        found, notices = resolve(desired, observed)
        targets = {t.pf.pci: t for t in found}
    pfs = []
    for pf in observed.pfs:
        target = targets.get(pf.pci)
        converged = None
        explicit: Dict[int, str] = {}
        if target is not None:
            converged = not plan_pf(target.spec, pf, observed.pci_drivers)
            explicit = target.spec.explicit_drivers()
        vfs = []
        for vf in pf.vfs:
            wanted = explicit.get(vf.index)
            vfs.append({
                "index": vf.index,
                "pci": vf.pci,
                "driver": vf.driver,
                "driver_override": vf.driver_override,
                "netdev": vf.netdevs[0] if vf.netdevs else None,
                "iommu_group": vf.iommu_group,
                "desired_driver": wanted,
                "matches": None if wanted is None else (vf.driver == wanted and vf.driver_override == wanted),
            })
        pfs.append({
            "pci": pf.pci,
            "name": pf.name,
            "vendor": pf.vendor,
            "device": pf.device,
            "driver": pf.driver,
            "total_vfs": pf.total_vfs,
            "num_vfs": pf.num_vfs,
            "autoprobe": pf.autoprobe,
            "block": target.spec.key if target else None,
            "desired_num_vfs": target.spec.num_vfs if target else None,
            "converged": converged,
            "vfs": vfs,
        })
    return {"pfs": pfs, "notices": notices, "iommu_groups": observed.iommu_groups}
