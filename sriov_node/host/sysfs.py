"""The sysfs capability: reads of the PCI tree and the primitive single-write(2) stores."""

from __future__ import annotations

import os
import re
import time
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

from sriov_node.errors import ReadOnlyRoot
from sriov_node.host.paths import PCI_DEVICES, PCI_DRIVERS, Root, check_part


DEFAULT_TIMEOUT = 60.0  # seconds: the deadline of every wait (--timeout)

_BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


_CHUNK = 65536
_MAX_TEXT = 1 << 20  # far beyond any sysfs attribute (a page)


def _read_text(path: str) -> Optional[str]:
    """A file's text without the trailing newline; None if absent or unreadable."""
    try:  # O_NONBLOCK: a FIFO in a captured or simulated tree reads as empty instead of hanging open()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        # A sysfs attribute is at most a page and comes whole from the first read; a shorter read
        # than asked is the end (no second read(2) to see EOF). Plain files (captures) longer than
        # a chunk are read on, up to _MAX_TEXT (a device such as /dev/zero in their place: unreadable).
        chunk = os.read(fd, _CHUNK)
        if len(chunk) == _CHUNK:
            chunks = [chunk]
            while chunk:
                if len(chunks) * _CHUNK > _MAX_TEXT:
                    return None
                chunk = os.read(fd, _CHUNK)
                chunks.append(chunk)
            chunk = b"".join(chunks)
        return chunk.decode("utf-8", "replace").rstrip("\n")
    except OSError:
        return None
    finally:
        os.close(fd)


def _override(value: Optional[str]) -> Optional[str]:
    """driver_override as read: None when none is set (the kernel shows "(null)", older ones "")."""
    return None if value in (None, "", "(null)") else value


def _link_name(path: str) -> Optional[str]:
    """The last component of a symbolic link's target, None when there is no link."""
    try:
        target = os.readlink(path).rstrip("/")
    except OSError:
        return None
    name = target[target.rfind("/") + 1:]
    if name in ("", ".", ".."):
        name = os.path.basename(os.path.realpath(path))
    return name


class WriteCount:
    """How many writes the host received; a run reads it before and after (never a growing list)."""

    def __init__(self) -> None:
        self.count = 0


class Sysfs:
    """sysfs (and /proc) under a root. Reads never cache across calls: every question goes to the files.

    Writes are single write(2) calls; the kernel's errno comes back as OSError.
    """

    writable = True
    # How long a probe may take to show its `driver` link (drivers such as nvme probe asynchronously)
    probe_grace = 1.0

    def __init__(self, root: Root, counter: Optional[WriteCount] = None):
        self.root = root
        self.counter = counter or WriteCount()

    def path(self, base: str, *parts: str) -> str:
        return self.root.path(base, *parts)

    # ------------------------------------------------------------------ generic reads

    def read(self, base: str, *parts: str) -> Optional[str]:
        """File contents without the trailing newline; None if absent or unreadable."""
        try:
            return _read_text(self.path(base, *parts))
        except ValueError:
            return None

    def read_bytes(self, base: str, *parts: str, limit: int = 4096) -> Optional[bytes]:
        try:
            fd = os.open(self.path(base, *parts), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (OSError, ValueError):
            return None
        try:
            data = b""
            while len(data) < limit:
                chunk = os.read(fd, limit - len(data))
                if not chunk:
                    break
                data += chunk
            return data
        except OSError:
            return None
        finally:
            os.close(fd)

    def read_int(self, base: str, *parts: str) -> Optional[int]:
        text = self.read(base, *parts)
        try:
            return int(text, 0) if text is not None else None
        except ValueError:
            return None

    def link_name(self, base: str, *parts: str) -> Optional[str]:
        """basename of a symlink's target (e.g. the `driver` link), None when absent."""
        try:
            return _link_name(self.path(base, *parts))
        except ValueError:
            return None

    def listdir(self, base: str, *parts: str) -> List[str]:
        try:
            return os.listdir(self.path(base, *parts))
        except (OSError, ValueError):
            return []

    def exists(self, base: str, *parts: str) -> bool:
        try:
            return os.path.lexists(self.path(base, *parts))
        except ValueError:
            return False

    def isdir(self, base: str, *parts: str) -> bool:
        try:
            return os.path.isdir(self.path(base, *parts))
        except ValueError:
            return False

    def uevent(self, base: str, *parts: str) -> Dict[str, str]:
        """KEY=value lines of a sysfs `uevent` file (DRIVER, PCI_SLOT_NAME, PCI_ID, ...)."""
        text = self.read(base, *parts, "uevent") or ""
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    # ------------------------------------------------------------------ PCI questions

    def device_exists(self, pci: str) -> bool:
        return self.exists(PCI_DEVICES, pci)

    # A PF is a PCI function, or a netdevsim device (whose VFs have no PCI functions).

    @staticmethod
    def is_pci(dev: str) -> bool:
        return bool(_BDF_RE.match(dev))

    def pf_bus(self, dev: str) -> str:
        return "pci" if self.is_pci(dev) else "netdevsim"

    def pf_dir(self, dev: str) -> str:
        return PCI_DEVICES if self.is_pci(dev) else f"sys/bus/{self.pf_bus(dev)}/devices"

    def pf_exists(self, dev: str) -> bool:
        return self.exists(self.pf_dir(dev), dev)

    def is_sriov_pf(self, dev: str) -> bool:
        """`dev` is here and has SR-IOV: a PCI function with sriov_totalvfs (what `observe` lists as
        PFs), a netdevsim device with sriov_numvfs."""
        return self.exists(self.pf_dir(dev), dev, "sriov_totalvfs" if self.is_pci(dev) else "sriov_numvfs")

    def pf_driver(self, dev: str) -> Optional[str]:
        return self.link_name(self.pf_dir(dev), dev, "driver")

    def device_driver(self, pci: str) -> Optional[str]:
        try:
            device = self.path(PCI_DEVICES, pci)
        except ValueError:
            return None
        return self._driver_at(device, pci)

    def _driver_at(self, device: str, pci: str) -> Optional[str]:
        name = _link_name(device + "/driver")
        if name is None and os.path.isdir(device + "/driver"):
            # a capture made with dereferenced links: the uevent file still names the driver
            name = self.uevent(PCI_DEVICES, pci).get("DRIVER")
        return name

    def driver_override(self, pci: str) -> Optional[str]:
        return _override(self.read(PCI_DEVICES, pci, "driver_override"))

    def vf_binding(self, pci: str) -> Tuple[Optional[str], Optional[str]]:
        """(device_driver, driver_override) of a PCI function, its directory resolved once: the
        two questions every verification asks of every VF."""
        try:
            device = self.path(PCI_DEVICES, pci)
        except ValueError:
            return None, None
        return self._driver_at(device, pci), _override(_read_text(device + "/driver_override"))

    def num_vfs(self, pf: str) -> Optional[int]:
        return self.read_int(self.pf_dir(pf), pf, "sriov_numvfs")

    def total_vfs(self, pf: str) -> Optional[int]:
        if self.is_pci(pf):
            return self.read_int(PCI_DEVICES, pf, "sriov_totalvfs")
        return self.read_int("sys/kernel/debug/netdevsim", pf, "max_vfs")  # netdevsim keeps it in debugfs

    def autoprobe(self, pf: str) -> Optional[bool]:
        value = self.read(PCI_DEVICES, pf, "sriov_drivers_autoprobe")
        return None if value is None else value.strip() == "1"

    def iommu_group(self, pci: str) -> Optional[str]:
        return self.link_name(PCI_DEVICES, pci, "iommu_group")

    def virtfn_count(self, pf: str) -> int:
        return sum(1 for name in self.listdir(PCI_DEVICES, pf) if name.startswith("virtfn"))

    def link_speed(self, ifname: str) -> Optional[int]:
        """A netdev's link speed in Mbit/s (its `speed`; -1: no link); None when it cannot be read
        (a driver may have no such answer). An interface that is administratively down answers
        EINVAL to `speed` (net-sysfs speed_show: not running); its `flags` lack IFF_UP, and its link is
        down for the drivers that need one (igb's VF rates): -1."""
        speed = self.read_int("sys/class/net", ifname, "speed")
        if speed is None:
            flags = self.read("sys/class/net", ifname, "flags")
            try:
                if flags is not None and not int(flags.strip(), 16) & 0x1:  # IFF_UP
                    return -1
            except ValueError:
                pass
        return speed

    def vf_address(self, pf: str, index: int) -> Optional[str]:
        name = self.link_name(PCI_DEVICES, pf, f"virtfn{index}")
        if name is None and self.isdir(PCI_DEVICES, pf, f"virtfn{index}"):
            name = self.uevent(PCI_DEVICES, pf, f"virtfn{index}").get("PCI_SLOT_NAME")
        return name

    def uevent_seqnum(self) -> Optional[int]:
        """The number of the kernel's latest uevent (every uevent carries its SEQNUM)."""
        return self.read_int("sys/kernel", "uevent_seqnum")

    def has_pci_driver(self, name: str) -> bool:
        return self.isdir(PCI_DRIVERS, name)

    def pci_drivers(self) -> FrozenSet[str]:
        """The PCI drivers registered now (/sys/bus/pci/drivers)."""
        return frozenset(self.listdir(PCI_DRIVERS))

    def vfio_enable_sriov(self) -> Optional[bool]:
        """vfio-pci's `enable_sriov` module parameter (a PF bound to it makes VFs only when Y); None
        when it cannot be read (vfio-pci not loaded)."""
        param = self.read("sys/module/vfio_pci/parameters", "enable_sriov")
        return None if param is None else param.strip() in ("Y", "1")

    def iommu_enabled(self) -> bool:
        """The IOMMU is on: the kernel made IOMMU groups (/sys/kernel/iommu_groups is not empty)."""
        return bool(self.listdir("sys/kernel/iommu_groups"))

    # ------------------------------------------------------------------ writes

    def check_writable(self) -> None:
        """Raise ReadOnlyRoot unless writes can reach a kernel (live or simulated)."""

    def write(self, base: str, parts: Tuple[str, ...], value: str) -> None:
        """One write(2) of `value` to a sysfs attribute. Raises OSError with the kernel's errno."""
        rel = os.path.join(base, *(check_part(p) for p in parts))
        self.check_writable()
        self.counter.count += 1
        self._store(rel, value.encode())

    def _store(self, rel: str, data: bytes) -> None:
        fd = os.open(os.path.join(self.root.root, rel), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def set_num_vfs(self, pf: str, count: int) -> None:
        self.write(self.pf_dir(pf), (pf, "sriov_numvfs"), f"{count}\n")

    def set_autoprobe(self, pf: str, enabled: bool) -> None:
        self.write(PCI_DEVICES, (pf, "sriov_drivers_autoprobe"), "1\n" if enabled else "0\n")

    def set_driver_override(self, pci: str, driver: Optional[str]) -> None:
        # "\n" clears: a zero-length write never reaches the kernel's store handler
        self.write(PCI_DEVICES, (pci, "driver_override"), f"{driver or ''}\n")

    def unbind(self, pci: str, driver: str) -> None:
        self.write(PCI_DRIVERS, (driver, "unbind"), f"{pci}\n")

    def bind(self, pci: str, driver: str) -> None:
        """drivers/<driver>/bind: unlike drivers_probe, it returns the probe's errno."""
        self.write(PCI_DRIVERS, (driver, "bind"), f"{pci}\n")

    def drivers_probe(self, pci: str) -> None:
        self.write("sys/bus/pci", ("drivers_probe",), f"{pci}\n")

    # ------------------------------------------------------------------ waits

    @staticmethod
    def wait_for(predicate: Callable[[], bool], deadline: float, interval: float = 0.02,
                 cancelled: Optional[Callable[[], bool]] = None) -> bool:
        """Poll `predicate` until true, `deadline` (time.monotonic()) passes, or `cancelled()`."""
        delay = interval
        while True:
            if predicate():
                return True
            now = time.monotonic()
            if now >= deadline or (cancelled is not None and cancelled()):
                return False
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 0.5)


class CapturedSysfs(Sysfs):
    """A copy of another machine's /sys: everything reads, nothing writes."""

    writable = False

    def check_writable(self) -> None:
        raise ReadOnlyRoot(
            f"{self.root.root} is a captured tree, not a live kernel or a simulated host; "
            "writes are refused (use --dry-run, or `sriov-node sim create` for a writable one)"
        )
