"""The only door to the kernel: small capabilities (sysfs, links, devlink, modules) under one root.

`open_host(root)` chooses, once, what stands behind them: the live kernel (root '/', or a root
whose sys and proc are the running kernel's sysfs and procfs: a host's / mounted in a pod) or a
captured tree (read-only). Another kernel behind the same capabilities (the simulator) is built
by whoever starts the program (`sriov_node.cli.root.open_root`), never from here: this package
knows nothing of it beyond what a Host carries (its capabilities and, for a kernel that sends its
own uevents, `uevents`, the factory of a listener for them).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from sriov_node.host.devlink import Devlink
from sriov_node.host.links import Links
from sriov_node.host.modules import Modules
from sriov_node.host.paths import CLASS_NET, PCI_DEVICES, PCI_DRIVERS, Root
from sriov_node.host.sysfs import Sysfs, WriteCount

__all__ = ["Host", "UeventListener", "open_host", "PCI_DEVICES", "PCI_DRIVERS", "CLASS_NET"]

# A listener for the uevents of a kernel that sends its own (one built outside this package): an
# object with fileno(), receive() -> one uevent's properties (a dict) or None when none waits, and
# close(). The factory is called once per listener.
UeventListener = Callable[[], Any]


class Host:
    """One machine's kernel as four capabilities that share a root and a write counter."""

    def __init__(self, root: Root, kind: str, sysfs: Sysfs, links: Links, devlink: Devlink, modules: Modules,
                 uevents: Optional[UeventListener] = None):
        self.root_prefix = root
        self.kind = kind  # "live" | "sim" | "capture"
        self.sysfs = sysfs
        self.links = links
        self.devlink = devlink
        self.modules = modules
        # Where this kernel's uevents are heard when it sends them itself (the simulator's socket);
        # None: the live kernel's come through udev/netlink, a captured tree sends none.
        self.uevents = uevents

    @property
    def root(self) -> str:
        return self.root_prefix.root

    @property
    def is_sim(self) -> bool:
        return self.kind == "sim"

    @property
    def is_real_root(self) -> bool:
        return self.kind == "live"

    @property
    def writes(self) -> int:
        """Writes (sysfs stores, module loads, netlink and devlink sets) since this host was opened."""
        return self.sysfs.counter.count

    def path(self, base: str, *parts: str) -> str:
        return self.root_prefix.path(base, *parts)

    def check_writable(self) -> None:
        self.sysfs.check_writable()


SYSFS_MAGIC, PROC_SUPER_MAGIC = 0x62656572, 0x9FA0


def _fs_type(path: str) -> int:
    """statfs(2)'s f_type of `path` (0 when it cannot be read)."""
    import ctypes

    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type is its first member, a long
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.statfs(os.fsencode(path), buf) != 0:
        return 0
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def is_live_root(root: str) -> bool:
    """A running host's / mounted at `root` (a pod's /host): its sys is a sysfs mount and its proc a procfs."""
    return (_fs_type(os.path.join(root, "sys")) == SYSFS_MAGIC
            and _fs_type(os.path.join(root, "proc")) == PROC_SUPER_MAGIC)


def open_host(root: str = "/") -> Host:
    """The live kernel for '/' (or a live host's / mounted elsewhere, as a pod's /host), else a
    read-only capture. (A simulated root is opened by `sriov_node.cli.root.open_root`.)"""
    prefix = Root(root)
    counter = WriteCount()
    if prefix.is_real or is_live_root(prefix.root):
        from sriov_node.host.devlink import NetlinkDevlink
        from sriov_node.host.links import NetlinkLinks
        from sriov_node.host.modules import Modprobe

        return Host(prefix, "live", Sysfs(prefix, counter), NetlinkLinks(counter), NetlinkDevlink(counter),
                    Modprobe(prefix, counter))
    from sriov_node.host.sysfs import CapturedSysfs

    return Host(prefix, "capture", CapturedSysfs(prefix, counter), Links(counter), Devlink(counter), Modules(prefix, counter))
