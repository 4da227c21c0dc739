"""The modules capability: load a driver's module, and name the driver the kernel would pick for a device."""

from __future__ import annotations

import errno
import fnmatch
import os
import subprocess
from typing import Dict, List, Optional, Tuple

from sriov_node.host.paths import Root
from sriov_node.host.sysfs import WriteCount


_ALIAS_LIMIT = 64 << 20  # modules.alias is ~1.5 MiB on a distribution kernel


class Modules:
    """Module questions answered from <root>/lib/modules/<release>/modules.alias; loading is refused."""

    def __init__(self, root: Root, counter: Optional[WriteCount] = None, release: Optional[str] = None):
        self.root = root
        self.counter = counter or WriteCount()
        self.release = release
        self._aliases: Optional[Dict[str, List[Tuple[str, str]]]] = None
        self._readable = False
        self._builtin_read = False

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

    def _pci_aliases(self) -> Optional[Dict[str, List[Tuple[str, str]]]]:
        """The `pci:` aliases of modules.alias and modules.builtin.alias, by the vendor they name
        ("v00008086", or "*" for patterns that match any vendor); None when modules.alias cannot
        be read (the kernel's choice is then unknown)."""
        if self._aliases is None:
            directory = self._modules_dir()
            found: Dict[str, List[Tuple[str, str]]] = {}
            readable = False
            for name in ("modules.alias", "modules.builtin.alias"):
                if not directory:
                    break
                try:
                    with open(os.path.join(directory, name), "rb") as fh:
                        data = fh.read(_ALIAS_LIMIT)
                except OSError:
                    continue
                readable = readable or name == "modules.alias"
                self._builtin_read = self._builtin_read or name == "modules.builtin.alias"
                for line in data.decode("utf-8", "replace").splitlines():
                    if line.startswith("alias pci:"):
                        parts = line.split()
                        if len(parts) == 3:
                            vendor = parts[1][4:13]
                            key = vendor if "*" not in vendor and "?" not in vendor and "[" not in vendor else "*"
                            found.setdefault(key, []).append((parts[1], parts[2]))
            self._aliases = found if readable else {}
            self._readable = readable
        return self._aliases if self._readable else None

    def default_drivers(self, modalias: Optional[str], vendor: Optional[str],
                        device: Optional[str]) -> Optional[Tuple[str, ...]]:
        """Every module whose ID table names a device with this modalias (modules.alias and
        modules.builtin.alias, as modprobe resolves it), in file order; () when none does; None
        when that cannot be known here (no modules.alias, or no modalias to look up).

        Override-only entries (vfio-pci's `vfio_pci:` aliases) are not `pci:` aliases: never a default.
        """
        if not modalias or not modalias.startswith("pci:"):
            return None
        aliases = self._pci_aliases()
        if aliases is None:
            return None
        out: List[str] = []
        for pattern, module in aliases.get(modalias[4:13], []) + aliases.get("*", []):
            if module not in out and fnmatch.fnmatchcase(modalias, pattern):
                out.append(module)
        if not out and not self._builtin_read:
            return None  # a built-in driver could take it, and the list of those is missing
        return tuple(out)

    def default_driver(self, modalias: Optional[str], vendor: Optional[str], device: Optional[str]) -> Optional[str]:
        """The module the kernel would load for a device with this modalias (as modprobe resolves it)."""
        found = self.default_drivers(modalias, vendor, device)
        return found[0] if found else None


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
        argv = ["systemctl", "start", f"modprobe@{name}.service"] if self.through_systemd else ["modprobe", "--", name]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"{argv[0]} is not installed")
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"{' '.join(argv)} did not finish in {timeout:.0f}s")
        if proc.returncode != 0:
            raise OSError(errno.ENOENT, (proc.stderr or proc.stdout).strip() or f"{' '.join(argv)} failed")
