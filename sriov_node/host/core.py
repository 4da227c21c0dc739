"""Host: path resolution under a root, sysfs reads, and the primitive writes."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from sriov_node.errors import ReadOnlyRoot

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.model import HostState, VfState

PCI_DEVICES = "sys/bus/pci/devices"
PCI_DRIVERS = "sys/bus/pci/drivers"
# A file at the top of a root made by `sriov-node sim create`: writes go through the kernel model.
SIM_MARKER = ".sriov-node-sim.json"


def _check_part(part: str) -> str:
    if not part or part in (".", "..") or "/" in part or "\0" in part:
        raise ValueError(f"refusing path component {part!r}")
    return part


class Host:
    """A view of one machine's kernel, rooted at `root` ('/' for the real one).

    Reads never cache across calls: every question goes to the files.
    Writes are single write(2) calls, logged in `self.writes`.
    """

    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root)
        self.writes: List[Tuple[str, str]] = []
        self._sim = None
        if os.path.isfile(os.path.join(self.root, SIM_MARKER)):
            from sriov_node.sim.kernel import SimKernel  # only simulated roots load the model

            self._sim = SimKernel(self.root)

    # ------------------------------------------------------------------ paths

    @property
    def is_sim(self) -> bool:
        return self._sim is not None

    @property
    def is_real_root(self) -> bool:
        return self.root == "/"

    @property
    def writable(self) -> bool:
        return self.is_sim or self.is_real_root

    def path(self, base: str, *parts: str) -> str:
        """`base` is a trusted constant ('sys/bus/pci/devices'); each part is one checked name."""
        return os.path.join(self.root, base, *(_check_part(p) for p in parts))

    # ------------------------------------------------------------------ reads

    def read(self, base: str, *parts: str) -> Optional[str]:
        """File contents without the trailing newline; None if absent or unreadable."""
        try:
            with open(self.path(base, *parts), "r", errors="replace") as fh:
                return fh.read().rstrip("\n")
        except (OSError, ValueError):
            return None

    def read_int(self, base: str, *parts: str) -> Optional[int]:
        text = self.read(base, *parts)
        try:
            return int(text, 0) if text is not None else None
        except ValueError:
            return None

    def link_name(self, base: str, *parts: str) -> Optional[str]:
        """basename of a symlink's target (e.g. the `driver` link), None when absent."""
        try:
            path = self.path(base, *parts)
            name = os.path.basename(os.readlink(path).rstrip("/"))
            if name in ("", ".", ".."):
                name = os.path.basename(os.path.realpath(path))
            return name
        except (OSError, ValueError):
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

    # -- device questions the executor asks after each write

    def device_exists(self, pci: str) -> bool:
        return self.exists(PCI_DEVICES, pci)

    def uevent(self, base: str, *parts: str) -> Dict[str, str]:
        """KEY=value lines of a sysfs `uevent` file (DRIVER, PCI_SLOT_NAME, PCI_ID, ...)."""
        text = self.read(base, *parts, "uevent") or ""
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def device_driver(self, pci: str) -> Optional[str]:
        name = self.link_name(PCI_DEVICES, pci, "driver")
        if name is None and self.isdir(PCI_DEVICES, pci, "driver"):
            # a capture made with dereferenced links: the uevent file still names the driver
            name = self.uevent(PCI_DEVICES, pci).get("DRIVER")
        return name

    def driver_override(self, pci: str) -> Optional[str]:
        value = self.read(PCI_DEVICES, pci, "driver_override")
        return None if value in (None, "", "(null)") else value

    def num_vfs(self, pf: str) -> Optional[int]:
        return self.read_int(PCI_DEVICES, pf, "sriov_numvfs")

    def total_vfs(self, pf: str) -> Optional[int]:
        return self.read_int(PCI_DEVICES, pf, "sriov_totalvfs")

    def autoprobe(self, pf: str) -> Optional[bool]:
        value = self.read(PCI_DEVICES, pf, "sriov_drivers_autoprobe")
        return None if value is None else value.strip() == "1"

    def iommu_group(self, pci: str) -> Optional[str]:
        return self.link_name(PCI_DEVICES, pci, "iommu_group")

    def virtfn_count(self, pf: str) -> int:
        return sum(1 for name in self.listdir(PCI_DEVICES, pf) if name.startswith("virtfn"))

    def vf_address(self, pf: str, index: int) -> Optional[str]:
        name = self.link_name(PCI_DEVICES, pf, f"virtfn{index}")
        if name is None and self.isdir(PCI_DEVICES, pf, f"virtfn{index}"):
            name = self.uevent(PCI_DEVICES, pf, f"virtfn{index}").get("PCI_SLOT_NAME")
        return name

    def has_pci_driver(self, name: str) -> bool:
        return self.isdir(PCI_DRIVERS, name)

    def observe(self, *, netlink_macs: bool = False) -> "HostState":
        from sriov_node.host.observe import observe

        return observe(self, netlink_macs=netlink_macs)

    def vf_holders(self, vfs: "Tuple[VfState, ...]") -> List[str]:
        from sriov_node.host.holders import vf_holders

        return vf_holders(self, vfs)

    # ------------------------------------------------------------------ writes

    def check_writable(self) -> None:
        """Raise ReadOnlyRoot unless this root is the real one or a simulated host."""
        if not self.writable:
            raise ReadOnlyRoot(
                f"{self.root} is a captured tree, not a live kernel or a simulated host; "
                "writes are refused (use --dry-run, or `sriov-node sim create` for a writable one)"
            )

    def write(self, base: str, parts: Tuple[str, ...], value: str) -> None:
        """One write(2) of `value` to a sysfs attribute. Raises OSError with the kernel's errno."""
        rel = os.path.join(base, *(_check_part(p) for p in parts))
        self.check_writable()
        self.writes.append((rel, value))
        if self._sim is not None:
            self._sim.write(rel, value.encode())
            return
        fd = os.open(os.path.join(self.root, rel), os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def set_num_vfs(self, pf: str, count: int) -> None:
        self.write(PCI_DEVICES, (pf, "sriov_numvfs"), f"{count}\n")

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

    def load_driver(self, name: str, timeout: float = 30.0) -> None:
        """Load the module providing PCI driver `name`. Raises OSError(ENOENT) if none does."""
        self.check_writable()
        self.writes.append(("modprobe", name))
        if self._sim is not None:
            self._sim.load_module(name)
            return
        try:
            proc = subprocess.run(
                ["modprobe", "--", name], capture_output=True, text=True, timeout=timeout, check=False
            )
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "modprobe is not installed")
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"modprobe {name} did not finish in {timeout:.0f}s")
        if proc.returncode != 0:
            raise OSError(errno.ENOENT, (proc.stderr or proc.stdout).strip() or f"modprobe {name} failed")

    # ------------------------------------------------------------------ waits

    def wait_for(self, predicate: Callable[[], bool], deadline: float, interval: float = 0.02) -> bool:
        """Poll `predicate` until true or `deadline` (time.monotonic()) passes. Never blocks longer."""
        delay = interval
        while True:
            if predicate():
                return True
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 2, 0.5)
