"""Kernel uevents as "look again" signals: where they come from, and which PF each one touches.

An event never carries the answer: it only names the PF whose state may have moved (a PF
driver bound or unbound, a PF netdev appeared, a VF removed or rebound). The daemon then
reconciles that PF from a fresh read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Optional, Set

from sriov_node.host import Host
from sriov_node.host.paths import PCI_DEVICES

# The actions that can move an SR-IOV PF away from its desired state (or make a block resolvable)
PCI_ACTIONS = frozenset({"add", "remove", "bind", "unbind"})
NET_ACTIONS = frozenset({"add", "remove", "move"})


@dataclass(frozen=True)
class Uevent:
    action: str
    subsystem: str
    devpath: str  # "/devices/pci0000:00/0000:00:03.0/0000:3b:00.0[/net/ens1f0]"
    seqnum: Optional[int] = None
    properties: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_properties(cls, props: Dict[str, str]) -> "Uevent":
        seq = props.get("SEQNUM")
        return cls(props.get("ACTION", ""), props.get("SUBSYSTEM", ""), props.get("DEVPATH", ""),
                   int(seq) if seq and seq.isdigit() else None, dict(props))

    @property
    def device(self) -> Optional[str]:
        """The device the event is about: the PCI function (or netdevsim device) owning a netdev."""
        parts = [p for p in self.devpath.split("/") if p]
        if self.subsystem == "net" and "net" in parts:
            i = len(parts) - 1 - parts[::-1].index("net")
            return parts[i - 1] if i >= 1 else None
        return parts[-1] if parts else None


class UeventSource:
    """A file descriptor to wait on, and the events it holds."""

    description = ""

    def fileno(self) -> int:  # pragma: no cover - every source overrides
        raise NotImplementedError

    def receive(self) -> Optional[Uevent]:  # pragma: no cover
        raise NotImplementedError

    def drain(self) -> Iterable[Uevent]:
        while True:
            event = self.receive()
            if event is None:
                return
            yield event

    def close(self) -> None:
        pass


class PyudevSource(UeventSource):
    """pyudev's monitor on pci and net: udev's events when udevd runs (/run/udev), else the kernel's."""

    def __init__(self, source: str):
        import pyudev

        self.context = pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source=source)
        if source == "udev":  # udev can filter in the kernel (BPF); raw kernel events carry no udev tags
            self.monitor.filter_by("pci")
            self.monitor.filter_by("net")
        self.monitor.start()
        self.description = {"udev": "udev events (systemd-udevd)", "kernel": "kernel uevents (no udevd here)"}[source]

    def fileno(self) -> int:
        return self.monitor.fileno()

    def receive(self) -> Optional[Uevent]:
        device = self.monitor.poll(timeout=0)
        if device is None:
            return None
        return Uevent.from_properties(dict(device.properties))


class SimSource(UeventSource):
    description = "the simulated kernel's uevents"

    def __init__(self, root: str):
        from sriov_node.sim.uevents import SimUeventSocket

        self.socket = SimUeventSocket(root)

    def fileno(self) -> int:
        return self.socket.fileno()

    def receive(self) -> Optional[Uevent]:
        props = self.socket.receive()
        return None if props is None else Uevent.from_properties(props)

    def close(self) -> None:
        self.socket.close()


def open_source(host: Host) -> UeventSource:
    """The simulated kernel's events for a simulated host; pyudev's for the live one.

    Raises OSError (or ImportError) with the reason when no source can be opened.
    """
    if host.is_sim:
        return SimSource(host.root)
    if not host.is_real_root:
        raise OSError(f"{host.root} is a captured tree: it sends no uevents")
    return PyudevSource("udev" if os.path.isdir("/run/udev") else "kernel")


def touched_pf(event: Uevent, host: Host, known_vfs: Dict[str, str]) -> Optional[str]:
    """The PF an event may have moved, if any: the device itself when it is a PF, its physfn
    when it is a VF (from sysfs, or from the last observation when the VF is already gone)."""
    if event.subsystem == "pci" and event.action not in PCI_ACTIONS:
        return None
    if event.subsystem == "net" and event.action not in NET_ACTIONS:
        return None
    if event.subsystem not in ("pci", "net"):
        return None
    dev = event.device
    if not dev:
        return None
    sysfs = host.sysfs
    try:
        if sysfs.is_pci(dev):
            if sysfs.exists(PCI_DEVICES, dev, "sriov_totalvfs"):
                return dev
            parent = sysfs.link_name(PCI_DEVICES, dev, "physfn")
            return parent or known_vfs.get(dev)
        if sysfs.exists("sys/bus/netdevsim/devices", dev, "sriov_numvfs"):
            return dev
    except ValueError:
        return None
    return None


def route(events: Iterable[Uevent], host: Host, known_vfs: Dict[str, str], covered: Dict[str, int],
          on_dropped: Optional[Callable[[Uevent], None]] = None) -> Set[str]:
    """The PFs to reconcile for these events; an event the last read of its PF already reflects
    (its SEQNUM at or below that read's) is dropped: our own writes never trigger us again."""
    due: Set[str] = set()
    for event in events:
        pf = touched_pf(event, host, known_vfs)
        if pf is None:
            continue
        seen = covered.get(pf)
        if event.seqnum is not None and seen is not None and event.seqnum <= seen:
            if on_dropped:
                on_dropped(event)
            continue
        due.add(pf)
    return due
