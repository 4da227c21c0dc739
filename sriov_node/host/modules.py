"""The modules capability: load a driver's module, and name the driver the kernel would pick for a device."""

from __future__ import annotations

import errno
import fnmatch
import os
import subprocess
from typing import List, Optional, Tuple

from sriov_node.host.paths import Root
from sriov_node.host.sysfs import WriteCount


class Modules:
    """Module questions answered from <root>/lib/modules/<release>/modules.alias; loading is refused."""

    def __init__(self, root: Root, counter: Optional[WriteCount] = None, release: Optional[str] = None):
        self.root = root
        self.counter = counter or WriteCount()
        self.release = release
        self._aliases: Optional[List[Tuple[str, str]]] = None

    def load(self, name: str, timeout: float = 30.0) -> None:
        raise OSError(errno.EROFS, "this root is not a live kernel")

    def _modules_dir(self) -> Optional[str]:
        release = self.release
        if release is None:
            try:
                with open(self.root.path("proc/sys/kernel", "osrelease")) as fh:
                    release = fh.read().strip()
            except OSError:
                return None
        for base in ("lib/modules", "usr/lib/modules"):
            path = os.path.join(self.root.root, base, release)
            if os.path.isdir(path):
                return path
        return None

    def _pci_aliases(self) -> List[Tuple[str, str]]:
        if self._aliases is None:
            self._aliases = []
            directory = self._modules_dir()
            if directory:
                try:
                    with open(os.path.join(directory, "modules.alias"), errors="replace") as fh:
                        for line in fh:
                            if line.startswith("alias pci:"):
                                parts = line.split()
                                if len(parts) == 3:
                                    self._aliases.append((parts[1], parts[2]))
                except OSError:
                    pass
        return self._aliases

    def default_driver(self, modalias: Optional[str], vendor: Optional[str], device: Optional[str]) -> Optional[str]:
        """The module the kernel would load for a device with this modalias (as modprobe resolves it).

        Drivers whose only entry is override-only (vfio-pci: `vfio_pci:` aliases) never match.
        """
        if not modalias:
            return None
        for pattern, module in self._pci_aliases():
            if fnmatch.fnmatchcase(modalias, pattern):
                return module
        return None


class Modprobe(Modules):
    """The live kernel: `modprobe NAME`, with a deadline.

    With SRIOV_NODE_MODULE_LOADER=systemd (the daemon's unit), modules are loaded by systemd's
    modprobe@NAME.service instead: the daemon itself keeps no CAP_SYS_MODULE.
    """

    def __init__(self, root: Root, counter: Optional[WriteCount] = None):
        super().__init__(root, counter, os.uname().release)
        self.through_systemd = os.environ.get("SRIOV_NODE_MODULE_LOADER") == "systemd"

    def load(self, name: str, timeout: float = 30.0) -> None:
        """Load the module providing PCI driver `name`. Raises OSError(ENOENT) if none does."""
        self.counter.count += 1
        # under a root prefix (a pod's /host) the modules are the host's: modprobe -d ROOT reads ROOT/lib/modules
        where = [] if self.root.is_real else ["-d", self.root.root]
        argv = (["systemctl", "start", f"modprobe@{name}.service"] if self.through_systemd
                else ["modprobe", *where, "--", name])
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"{argv[0]} is not installed")
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"{' '.join(argv)} did not finish in {timeout:.0f}s")
        if proc.returncode != 0:
            raise OSError(errno.ENOENT, (proc.stderr or proc.stdout).strip() or f"{' '.join(argv)} failed")
