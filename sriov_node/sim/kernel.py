"""The kernel model behind a simulated root: every write obeys docs/kernel-sriov-spec rules.

`SimKernel` is the public class; its jobs live in three modules:
- tree.py: the tree on disk and the model file, the undo journal (a killed writer's half-done
  write is rolled back), the uevents each write sends;
- pci.py: the PCI and driver rules (numvfs, bind/unbind, driver_override, new_id, probe,
  SR-IOV enable/disable, remove/rescan, modprobe);
- faults.py: injected faults and the hooks tests use.
"""

from __future__ import annotations

from sriov_node.sim import MARKER
from sriov_node.sim.pci import (GENERIC_DRIVERS, LEAVES_SRIOV_ON_REMOVE, PAGE_SIZE, READ_ONLY_ATTRS, PciRules,
                                modalias, parse_kstrtobool, parse_kstrtoul)
from sriov_node.sim.tree import JOURNAL, LOCK, LOG, UEVENT_LOG, UEVENT_SOCKET, _err

__all__ = ["SimKernel", "MARKER", "LOG", "LOCK", "JOURNAL", "UEVENT_LOG", "UEVENT_SOCKET", "GENERIC_DRIVERS",
           "LEAVES_SRIOV_ON_REMOVE", "READ_ONLY_ATTRS", "PAGE_SIZE", "modalias", "parse_kstrtoul",
           "parse_kstrtobool", "_err"]


class SimKernel(PciRules):
    """One simulated root's kernel: the tree (SimTree), its faults and test hooks (SimFaults), and
    the PCI and driver rules every write goes through (PciRules)."""
