"""The only door to the kernel: reads and primitive writes, all under one root prefix."""

from sriov_node.host.core import SIM_MARKER, Host

__all__ = ["Host", "SIM_MARKER"]
