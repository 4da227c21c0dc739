"""The modules capability: load a driver's module, and name the driver the kernel would pick for a device."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
from typing import Dict, List, Optional, Tuple

from sriov_node.host.paths import Root
from sriov_node.host.sysfs import WriteCount


_ALIAS_LIMIT = 64 << 20  # modules.alias is ~1.5 MiB on a distribution kernel


def _matches(modalias: str, pattern: str) -> bool:
    """fnmatch for a modules.alias pattern; a plain prefix test first (most patterns start with
    the vendor and device, and most do not match)."""
    stop = _WILD_S.search(pattern)
    head = pattern[:stop.start()] if stop else pattern
    if not modalias.startswith(head):
        return False
    return fnmatch.fnmatchcase(modalias, pattern)


_WILD_S = re.compile(r"[*?\[]")


class Modules:
    """Module questions answered from <root>/lib/modules/<release>/modules.alias; loading is refused."""

    def __init__(self, root: Root, counter: Optional[WriteCount] = None, release: Optional[str] = None):
        self.root = root
        self.counter = counter or WriteCount()
        self.release = release
        self._aliases: Optional[bytes] = None
        self._by_vendor: Dict[str, List[Tuple[str, str]]] = {}
        # modalias -> its default drivers: the alias text is read once, so is each answer (the
        # daemon asks the same few modaliases in every run; matching one against a vendor's ~2800
        # patterns costs ~85 ms in the lab's emulated guest)
        self._defaults: Dict[str, Optional[Tuple[str, ...]]] = {}
        self._driver_aliases: Dict[str, Optional[Tuple[str, ...]]] = {}  # driver -> its module's pci: patterns
        self._readable = False
        self._builtin_read = False

    def load(self, name: str, timeout: float = 30.0) -> None:
        raise OSError(errno.EROFS, "this root is not a live kernel")

    def _modules_dir(self) -> Optional[str]:
        release = self.release
        if release is None:
            from sriov_node.files import read_regular

            try:
                release = read_regular(self.root.path("proc/sys/kernel", "osrelease"), limit=256).decode().strip()
            except (OSError, UnicodeDecodeError):
                return None
        for base in ("lib/modules", "usr/lib/modules"):
            path = os.path.join(self.root.root, base, release)
            if os.path.isdir(path):
                return path
        return None

    def _alias_text(self) -> Optional[bytes]:
        """modules.alias and modules.builtin.alias, read once, each line led by a newline; None when
        modules.alias cannot be read (the kernel's choice is then unknown)."""
        if self._aliases is None:
            directory = self._modules_dir()
            chunks: List[bytes] = []
            for name in ("modules.alias", "modules.builtin.alias"):
                if not directory:
                    break
                from sriov_node.files import read_regular

                try:  # never blocks on a FIFO, never reads a device: one reader for every file we read
                    chunks.append(b"\n" + read_regular(os.path.join(directory, name), limit=_ALIAS_LIMIT))
                except OSError:
                    continue
                self._readable = self._readable or name == "modules.alias"
                self._builtin_read = self._builtin_read or name == "modules.builtin.alias"
            self._aliases = b"\n".join(chunks)
        return self._aliases if self._readable else None

    def _pci_aliases(self, vendor: str) -> List[Tuple[str, str]]:
        """(pattern, module) of the `pci:` aliases that can match a device of `vendor` ("v00008086"):
        those naming it, then those for any vendor. One scan of the text per vendor (a regex with a
        literal head runs in C: ~2 ms over a distribution kernel's 1.5 MiB, against ~20 ms to split
        every line)."""
        found = self._by_vendor.get(vendor)
        if found is None:
            text = self._alias_text() or b""
            head = re.escape(vendor.encode("ascii", "replace"))
            found = [(p.decode("ascii", "replace"), m.decode("utf-8", "replace"))
                     for regex in (rb"\nalias (pci:" + head + rb"\S*) (\S+)", rb"\nalias (pci:v[*?\[]\S*) (\S+)")
                     for p, m in re.findall(regex, text)]
            self._by_vendor[vendor] = found
        return found

    def default_drivers(self, modalias: Optional[str], vendor: Optional[str],
                        device: Optional[str]) -> Optional[Tuple[str, ...]]:
        """Every module whose ID table names a device with this modalias (modules.alias and
        modules.builtin.alias, as modprobe resolves it); () when none does; None when that cannot
        be known here (no modules.alias, or no modalias to look up).

        Override-only entries (vfio-pci's `vfio_pci:` aliases) are not `pci:` aliases: never a default.
        """
        if not modalias or not modalias.startswith("pci:") or self._alias_text() is None:
            return None
        if modalias in self._defaults:
            return self._defaults[modalias]
        out: List[str] = []
        for pattern, module in self._pci_aliases(modalias[4:13]):
            if module not in out and _matches(modalias, pattern):
                out.append(module)
        # None: a built-in driver could take it, and the list of those is missing
        found = tuple(out) if out or self._builtin_read else None
        self._defaults[modalias] = found
        return found

    def default_driver(self, modalias: Optional[str], vendor: Optional[str], device: Optional[str]) -> Optional[str]:
        """The module the kernel would load for a device with this modalias (as modprobe resolves it)."""
        found = self.default_drivers(modalias, vendor, device)
        return found[0] if found else None

    def pci_aliases(self, driver: str) -> Optional[Tuple[str, ...]]:
        """The `pci:` patterns modules.alias and modules.builtin.alias give the module behind PCI driver
        `driver` (its static ID table, as modpost wrote it): () none (a module with no ID table, such as
        pci-stub, uio_pci_generic or igb_uio, or vfio-pci, whose only entries are override-only
        `vfio_pci:` aliases; or a name no module has); None when modules.alias cannot be read.

        The module is the loaded driver's own (/sys/bus/pci/drivers/<driver>/module), else the name
        with - as _ (modules.alias spells module names so), or what an `alias <driver> <module>` names."""
        if driver in self._driver_aliases:
            return self._driver_aliases[driver]
        text = self._alias_text()
        if text is None:
            return None
        modules = [driver.replace("-", "_")]
        try:
            loaded = self.root.path("sys/bus/pci/drivers", driver, "module")
            if os.path.islink(loaded):
                modules.insert(0, os.path.basename(os.readlink(loaded)))
        except (OSError, ValueError):  # not a name a driver directory can have, or gone meanwhile
            pass
        named = re.search(rb"\nalias " + re.escape(driver.encode("utf-8", "replace")) + rb" (\S+)", text)
        if named:
            modules.append(named.group(1).decode("utf-8", "replace"))
        found: List[str] = []
        for module in dict.fromkeys(modules):
            regex = rb"\nalias (pci:\S+) " + re.escape(module.encode("utf-8", "replace")) + rb"(?=\s|$)"
            found += [p.decode("ascii", "replace") for p in re.findall(regex, text)]
        out = tuple(dict.fromkeys(found))
        self._driver_aliases[driver] = out
        return out

    def has_module(self, name: str) -> Optional[bool]:
        """Can `modprobe NAME` find a module of that name here: loaded (/sys/module), a module file
        (modules.dep), built in (modules.builtin), or an alias naming one (`alias NAME module` in
        modules.alias)? None when this kernel's module lists cannot be read (then it is tried)."""
        norm = name.replace("-", "_")
        if os.path.isdir(self.root.path("sys/module", norm)):
            return True
        directory = self._modules_dir()
        if not directory:
            return None
        from sriov_node.files import read_regular

        names = set()
        read = False
        for listing in ("modules.dep", "modules.builtin"):
            try:
                text = read_regular(os.path.join(directory, listing), limit=_ALIAS_LIMIT).decode("utf-8", "replace")
            except OSError:
                continue
            read = read or listing == "modules.dep"
            for line in text.splitlines():
                path = line.split(":", 1)[0].strip()
                if path:
                    base = os.path.basename(path)
                    names.add(base.split(".ko", 1)[0].replace("-", "_"))
        if not read:
            return None
        if norm in names:
            return True
        aliases = self._alias_text() or b""
        return re.search(rb"\nalias " + re.escape(name.encode()) + rb" \S+", aliases) is not None


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
        import subprocess  # only a run that loads a module pays for it (and threading) at start-up

        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, f"{argv[0]} is not installed")
        except subprocess.TimeoutExpired:
            raise OSError(errno.ETIMEDOUT, f"{' '.join(argv)} did not finish in {timeout:.0f}s")
        if proc.returncode != 0:
            raise OSError(errno.ENOENT, (proc.stderr or proc.stdout).strip() or f"{' '.join(argv)} failed")
