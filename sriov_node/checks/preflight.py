"""The checks `apply` runs before a PF's plan: what would make its actions fail for a platform reason."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.host import Host
    from sriov_node.plan import PfPlan


def preflight(host: "Host", pf_plan: "PfPlan") -> Optional[str]:
    """Why this PF's plan cannot work on this platform (refused, exit 3), or None."""
    return None
