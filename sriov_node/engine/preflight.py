"""The checks `apply` runs before a PF's plan: what would make its actions fail for a platform reason.

Cheap by design (it runs before every PF plan that has actions): it looks only at what the plan's
actions need. Today that is vfio-pci's IOMMU: a VF bound to vfio-pci needs an IOMMU group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from sriov_node.engine.actions import BindDriver
from sriov_node.model import format_ranges, is_vfio

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.host import Host
    from sriov_node.engine.plan import PfPlan


def preflight(host: "Host", pf_plan: "PfPlan") -> Optional[str]:
    """Why this PF's plan cannot work on this platform (refused, exit 3), or None."""
    binds = [a for a in pf_plan.actions if isinstance(a, BindDriver) and is_vfio(a.driver)]
    if not binds or host.sysfs.iommu_enabled():
        return None  # nothing needs an IOMMU group, or the IOMMU is on (every device has a group)
    # The IOMMU is off: only now is the platform read, to say why and how to turn it on.
    from sriov_node.checks.diagnose import FAIL, check_iommu
    from sriov_node.platform import PlatformState
    from sriov_node.host.platform import observe_boot, observe_iommu, read_cmdline, read_cpu_vendor

    state = PlatformState(host.root, host.is_real_root, read_cmdline(host), read_cpu_vendor(host),
                          observe_iommu(host, group_types=False), boot=observe_boot(host))
    result = check_iommu(state, wants_vfio=True)
    if result.status != FAIL:
        return None
    drivers = sorted({a.driver for a in binds})
    vfs = format_ranges([a.vf for a in binds])
    return (f"VF(s) {vfs} must bind to {', '.join(drivers)}, but the IOMMU is {result.seen}; nothing was written. "
            f"Fix: {result.fix}")
