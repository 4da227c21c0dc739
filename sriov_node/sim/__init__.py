"""A simulated kernel: a sysfs-shaped tree on disk whose writes obey shared kernel rules.

Production code reaches it only through sriov_node.host (a root carrying the marker file).
"""

from sriov_node.sim.build import create_host
from sriov_node.sim.nics import NICS

__all__ = ["create_host", "NICS"]
