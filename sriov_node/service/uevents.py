"""Kernel uevents as "look again" signals: where they come from, and which PF each one touches.

An event never carries the answer: it only names the PF whose state may have moved (a PF
driver bound or unbound, a PF netdev appeared, a VF removed or rebound). The daemon then
reconciles that PF from a fresh read.
"""

from __future__ import annotations

import errno
import os
import struct
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

from sriov_node.host import Host
from sriov_node.host.paths import PCI_DEVICES

# The actions that can move an SR-IOV PF away from its desired state (or make a block resolvable)
PCI_ACTIONS = frozenset({"add", "remove", "bind", "unbind"})
NET_ACTIONS = frozenset({"add", "remove", "move"})
# The buses whose devices can be PFs: PCI, and netdevsim (the kernel's simulated NIC, which has a
# driver to unbind and bind like a PCI NIC's)
BUSES = frozenset({"pci", "netdevsim"})
# The receive buffer of a live host's uevent sockets (udevd asks for the same, SO_RCVBUFFORCE)
RECEIVE_BUFFER = 128 << 20


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
    """A file descriptor to wait on, and the events it holds.

    `lost`: how many times since its reader last reset it the kernel dropped events for this
    source (ENOBUFS: its socket's receive buffer was full); what they said is unknown."""

    description = ""
    lost = 0

    def fileno(self) -> int:  # pragma: no cover - every source overrides
        raise NotImplementedError

    def receive(self) -> Optional[Uevent]:  # pragma: no cover
        raise NotImplementedError

    def drain(self) -> Iterable[Uevent]:
        while True:
            try:
                event = self.receive()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost += 1  # the events after the overrun are still there: read on
                continue
            if event is None:
                return
            yield event

    def close(self) -> None:
        pass


class PyudevSource(UeventSource):
    """pyudev's monitor: the kernel's own uevents (source "kernel": sent the moment the kernel acts,
    before udevd has even read them) or udevd's (source "udev": sent once udevd has processed the
    event, so a netdev has its final name). `subsystems`: the ones this source answers for."""

    def __init__(self, source: str, subsystems: FrozenSet[str] = frozenset({"pci", "net"})):
        import pyudev

        self.subsystems = subsystems
        self.context = pyudev.Context()
        self.monitor = pyudev.Monitor.from_netlink(self.context, source=source)
        try:  # udevd's own size: a burst of 256 VFs on each of many PFs is not lost
            self.monitor.set_receive_buffer_size(RECEIVE_BUFFER)
        except OSError:  # pragma: no cover - needs CAP_NET_ADMIN; the kernel's default stays
            pass
        if source == "udev":  # udev can filter in the kernel (BPF); raw kernel events carry no udev tags
            for subsystem in sorted(subsystems):
                self.monitor.filter_by(subsystem)
        self.monitor.start()
        self.description = f"{'/'.join(sorted(subsystems))} events from " + (
            "the kernel" if source == "kernel" else "udevd")

    def fileno(self) -> int:
        return self.monitor.fileno()

    def receive(self) -> Optional[Uevent]:
        while True:
            try:
                device = self.monitor.poll(timeout=0)
            except OSError as exc:
                if exc.errno is not None:
                    raise  # recvmsg's own error (ENOBUFS among them): drain knows it
                # pyudev's poll saw POLLERR and says only "Error while polling fd": the socket's
                # pending error (ENOBUFS after an overrun) says why, and reading it clears it
                code = self._socket_error()
                if not code:
                    raise
                raise OSError(code, os.strerror(code)) from exc
            if device is None:
                return None
            if device.subsystem in self.subsystems:  # the kernel source hears every subsystem
                return Uevent.from_properties(dict(device.properties))

    def _socket_error(self) -> int:
        import socket

        with socket.socket(fileno=os.dup(self.fileno())) as sock:
            return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


class ListenerSource(UeventSource):
    """The uevents of a kernel that sends its own (the simulator's), from the listener its Host carries."""

    def __init__(self, host: Host):
        if host.uevents is None:
            raise OSError(f"{host.root}: its kernel has no uevent listener of its own")
        self.socket = host.uevents()
        self.description = getattr(self.socket, "description", f"the uevents of {host.root}")

    def fileno(self) -> int:
        return self.socket.fileno()

    def receive(self) -> Optional[Uevent]:
        props = self.socket.receive()
        return None if props is None else Uevent.from_properties(props)

    def close(self) -> None:
        self.socket.close()


class LinkSource(UeventSource):
    """The netdevs whose state moved (rtnetlink's link group, `Links.listen`), as "link" events of
    the device that owns the netdev (devpath "/<device>/net/<netdev>"; a virtual netdev's are dropped):
    a VF setting, or a PF's MTU, changed by hand sends no uevent, only this. The event names the
    netdev, not what changed: the daemon compares the PF with its last read."""

    ACTION = "link"

    def __init__(self, host: Host):
        self.host = host
        self.listener = host.links.listen(RECEIVE_BUFFER)
        self.waiting: List[Tuple[int, str]] = []
        self.description = getattr(self.listener, "description", "link changes from rtnetlink")

    def fileno(self) -> int:
        return self.listener.fileno()

    def receive(self) -> Optional[Uevent]:
        while True:
            if not self.waiting:
                self.waiting = self.listener.receive()[::-1]
                if not self.waiting:
                    return None
            ifindex, ifname = self.waiting.pop()
            from sriov_node.host.observe import netdev_owners

            # the device that owns the netdev (none: a virtual netdev, or one gone since: nothing to say)
            owner = netdev_owners(self.host, [ifname]).get(ifname) if ifname else None
            if owner:
                return Uevent(self.ACTION, "net", f"/{owner}/net/{ifname}", None,
                              {"INTERFACE": ifname, "IFINDEX": str(ifindex)})

    def close(self) -> None:
        self.listener.close()


def open_source(host: Host) -> UeventSource:
    """One source for both subsystems (boot's wait): the host's own listener when its kernel sends
    its uevents itself (the simulated kernel); udevd's when it runs, else the kernel's. Raises
    OSError (or ImportError) with the reason."""
    if host.uevents is not None:
        return ListenerSource(host)
    if not host.is_real_root:
        raise OSError(f"{host.root} is a captured tree: it sends no uevents")
    return PyudevSource("udev" if os.path.isdir("/run/udev") else "kernel")


def open_sources(host: Host) -> List[UeventSource]:
    """Where the daemon hears that something moved.

    A host whose kernel sends its own uevents (the simulated kernel): its listener. Live host: PCI (and netdevsim) events
    (add/remove/bind/unbind) straight from the kernel, which need no interface name and arrive before udevd has processed
    them (a PF driver reload is answered at once); netdev events from udevd when it runs, since
    only then does a netdev carry its final name (a config that selects a PF by name needs it).
    Without udevd (/run/udev absent: a container, an initrd), both from the kernel. On every host,
    rtnetlink's link group too (`LinkSource`): a VF setting changed by hand sends no uevent.

    Raises OSError (or ImportError) with the reason when no source can be opened.
    """
    if host.uevents is not None:
        return [ListenerSource(host), LinkSource(host)]
    if not host.is_real_root:
        raise OSError(f"{host.root} is a captured tree: it sends no uevents")
    sources: List[UeventSource] = []
    try:
        if not os.path.isdir("/run/udev"):
            sources.append(PyudevSource("kernel", BUSES | {"net"}))
        else:
            sources.append(PyudevSource("kernel", BUSES))
            sources.append(PyudevSource("udev", frozenset({"net"})))
        sources.append(LinkSource(host))
    except BaseException:
        for s in sources:
            s.close()
        raise
    return sources


# ---------------------------------------------------------------------------- inotify

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of NUL-padded name


class DirectoryWatch:
    """inotify on one directory (ctypes on libc): a file descriptor that becomes readable when a
    file in it is created, written and closed, or renamed into it. Idle, it costs nothing."""

    MASK = IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR

    def __init__(self, path: str):
        import ctypes
        import ctypes.util

        self.path = path
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self.wd = -1
        try:
            self.rearm()
        except OSError:
            os.close(fd)
            raise

    def rearm(self) -> None:
        """(Re)create the directory if needed and watch it (after it was removed or renamed away)."""
        import ctypes

        os.makedirs(self.path, mode=0o755, exist_ok=True)
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(self.path), self.MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {self.path}: {os.strerror(err)}")
        self.wd = wd

    def fileno(self) -> int:
        return self.fd

    @property
    def armed(self) -> bool:
        """The directory is watched (False after it went away and could not be watched again)."""
        return self.fd >= 0 and self.wd >= 0

    def drain(self) -> List[Tuple[int, str]]:
        """The waiting events as (mask, name); re-arms itself when the directory went away."""
        events: List[Tuple[int, str]] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].split(b"\0", 1)[0]
                events.append((mask, os.fsdecode(name)))
                offset += _EVENT.size + length
        if any(mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) for mask, _ in events):
            self.wd = -1  # watching nothing until rearmed
            try:
                self.rearm()
            except OSError:
                pass  # the next write into a recreated directory is missed until a restart; said by the caller
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def touched_pf(event: Uevent, host: Host, known_vfs: Dict[str, str]) -> Optional[str]:
    """The PF an event may have moved, if any: the device itself when it is a PF, its physfn
    when it is a VF (from sysfs, or from the last observation when the VF is already gone)."""
    if event.action == LinkSource.ACTION:  # a netdev's state moved: only a PF's own netdev's concerns a PF
        dev = event.device
        try:
            return dev if dev and host.sysfs.is_sriov_pf(dev) else None
        except ValueError:
            return None
    if event.subsystem in BUSES and event.action not in PCI_ACTIONS:
        return None
    if event.subsystem == "net" and event.action not in NET_ACTIONS:
        return None
    if event.subsystem not in BUSES and event.subsystem != "net":
        return None
    dev = event.device
    if not dev:
        return None
    sysfs = host.sysfs
    try:
        if sysfs.is_sriov_pf(dev):
            return dev
        if sysfs.is_pci(dev):
            parent = sysfs.link_name(PCI_DEVICES, dev, "physfn")
            return parent or known_vfs.get(dev)
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
