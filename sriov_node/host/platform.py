"""What `sriov-node check` reads of the platform, under the root prefix, as one frozen snapshot
(the values are in sriov_node/platform.py).

Nothing here judges: the checks (sriov_node/checks/) are pure functions of this snapshot. Every
file is read through the root prefix; a file that cannot be read says why (absent, permission,
a symbolic link leaving the root), so a check can say "skip" with the reason instead of guessing.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Iterable, List, Optional, Sequence, Tuple

from sriov_node.files import UnsafeFile, open_regular, read_regular
from sriov_node.host import Host
from sriov_node.host.observe import default_driver_of, pci_id
from sriov_node.host.paths import PCI_DEVICES, PCI_DRIVERS
from sriov_node.platform import (BLS_ENTRIES, DEBIAN_VERSION, EXT_SRIOV, FULL_SIZE, GRUB_CFG, GRUB_DEFAULTS,
                                 GRUB_DROPINS, GRUBENV, KERNEL_CMDLINE, REBOOT_REQUIRED, BootFiles, FileRead,
                                 IommuState, ModulesState, ModuleState, NetworkManagerState, PciFunction,
                                 PlatformState, find_ext)

ACPI_TABLES = "sys/firmware/acpi/tables"
IOMMU_ACPI_TABLES = ("DMAR", "IVRS")  # Intel VT-d, AMD-Vi
CONFIG_SPACE = 4096
NETWORK_CLASS = "02"  # PCI base class 0x02: network controllers
MAX_TEXT = 1 << 20

UDEV_RULES = ("/etc/udev/rules.d", "/run/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d")
NM_CONF = ("/etc/NetworkManager/NetworkManager.conf",)
NM_CONF_DIRS = ("/usr/lib/NetworkManager/conf.d", "/run/NetworkManager/conf.d", "/etc/NetworkManager/conf.d")
_VF_HINT = re.compile(r"physfn|virtfn|sriov|\bvfs?\b|iavf|ixgbevf|igbvf|i40evf|_vf\b", re.IGNORECASE)
_BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


# ---------------------------------------------------------------------------- file reads


def _split(path: str) -> Tuple[str, Tuple[str, ...]]:
    parts = [p for p in path.split("/") if p]
    return "/".join(parts[:-1]), (parts[-1],)


def _inside(host: Host, path: str) -> bool:
    root = os.path.realpath(host.root)
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def _problem(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (run sriov-node check as root)"
    return exc.strerror or str(exc)


def read_file(host: Host, path: str) -> FileRead:
    """A text file under the root; never follows a symbolic link out of it."""
    base, parts = _split(path)
    full = host.path(base, *parts)
    if os.path.islink(full) and not _inside(host, full):
        return FileRead(path, None, f"is a symbolic link to {os.readlink(full)}, outside the root")
    try:  # a regular file only, never waited on (a FIFO), at most MAX_TEXT bytes (sriov_node.files)
        data = read_regular(full, limit=MAX_TEXT)
    except FileNotFoundError:
        return FileRead(path)
    except NotADirectoryError:
        return FileRead(path)
    except UnsafeFile as exc:
        return FileRead(path, None, exc.reason)
    except OSError as exc:
        return FileRead(path, None, _problem(exc))
    return FileRead(path, data.decode("utf-8", errors="replace"))


def list_dir(host: Host, path: str) -> Tuple[Optional[List[str]], Optional[str]]:
    """(sorted names, None), (None, None) when absent, (None, why) when unreadable."""
    base, parts = _split(path)
    full = host.path(base, *parts)
    if os.path.islink(full) and not _inside(host, full):
        return None, f"{path} is a symbolic link outside the root"
    try:
        return sorted(os.listdir(full)), None
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as exc:
        return None, f"{path}: {_problem(exc)}"


# ---------------------------------------------------------------------------- the kernel's view


def read_cmdline(host: Host) -> FileRead:
    return read_file(host, "/proc/cmdline")


def read_cpu_vendor(host: Host) -> Optional[str]:
    """The first vendor_id of /proc/cpuinfo (x86); None on other architectures or when unreadable."""
    try:
        with os.fdopen(open_regular(host.path("proc", "cpuinfo")), errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip() or None
    except OSError:
        return None
    return None


def cpuinfo_problem(host: Host) -> Optional[str]:
    """Why /proc/cpuinfo cannot be read ("absent", permission denied, ...), or None when it can."""
    try:
        os.close(open_regular(host.path("proc", "cpuinfo")))
        return None
    except FileNotFoundError:
        return "absent"
    except UnsafeFile as exc:
        return exc.reason
    except OSError as exc:
        return _problem(exc)


def observe_iommu(host: Host, *, group_types: bool = True) -> IommuState:
    sysfs = host.sysfs
    groups = sysfs.listdir("sys/kernel/iommu_groups")
    types = sorted({t for t in (sysfs.read("sys/kernel/iommu_groups", g, "type") for g in groups) if t}) \
        if group_types else []
    tables, _ = list_dir(host, "/" + ACPI_TABLES)  # absent (no ACPI) or unreadable: cannot tell
    acpi = None if tables is None else tuple(t for t in IOMMU_ACPI_TABLES if t in tables)
    noiommu = sysfs.read("sys/module/vfio/parameters", "enable_unsafe_noiommu_mode")
    return IommuState(
        units=tuple(sorted(sysfs.listdir("sys/class/iommu"))),
        groups=len(groups),
        group_types=tuple(types),
        acpi_tables=acpi,
        noiommu=None if noiommu is None else noiommu.strip() in ("Y", "1"),
    )


def upstream_of(host: Host, pci: str) -> Optional[str]:
    """The PCI bridge above a function (the parent directory of its sysfs device), if any."""
    try:
        real = os.path.realpath(host.path(PCI_DEVICES, pci))
    except ValueError:
        return None
    parent = os.path.basename(os.path.dirname(real))
    return parent if _BDF_RE.match(parent) else None


def observe_function(host: Host, pci: str) -> PciFunction:
    sysfs = host.sysfs
    if not sysfs.device_exists(pci):
        return PciFunction(pci, False)
    driver = sysfs.device_driver(pci)
    upstream = upstream_of(host, pci)
    ari = sysfs.read(PCI_DEVICES, pci, "ari_enabled")
    vfio_sriov = None
    if driver == "vfio-pci":
        vfio_sriov = sysfs.vfio_enable_sriov()
    return PciFunction(
        pci=pci,
        exists=True,
        vendor=pci_id(host, pci, "vendor"),
        device=pci_id(host, pci, "device"),
        pci_class=pci_id(host, pci, "class"),
        driver=driver,
        netdevs=tuple(sorted(sysfs.listdir(PCI_DEVICES, pci, "net"))),
        total_vfs=sysfs.total_vfs(pci),
        num_vfs=sysfs.num_vfs(pci),
        config=sysfs.read_bytes(PCI_DEVICES, pci, "config", limit=CONFIG_SPACE),
        upstream=upstream,
        upstream_config=sysfs.read_bytes(PCI_DEVICES, upstream, "config", limit=CONFIG_SPACE) if upstream else None,
        ari_enabled=None if ari is None else ari.strip() == "1",
        default_driver=default_driver_of(host, pci) if driver is None else None,
        vfio_enable_sriov=vfio_sriov,
    )


def sriov_candidates(host: Host) -> List[str]:
    """Every PCI function that is, or might be made, an SR-IOV PF, in address order: network
    functions (class 0x02), functions with sriov_totalvfs, and functions whose config space has an
    SR-IOV capability (the kernel shows no sriov_* files when TotalVFs is 0). VFs are left out."""
    found = []
    for name in sorted(host.sysfs.listdir(PCI_DEVICES)):
        if host.sysfs.exists(PCI_DEVICES, name, "physfn"):
            continue  # a VF
        if (pci_id(host, name, "class") or "").startswith(NETWORK_CLASS) \
                or host.sysfs.exists(PCI_DEVICES, name, "sriov_totalvfs"):
            found.append(name)
            continue
        config = host.sysfs.read_bytes(PCI_DEVICES, name, "config", limit=CONFIG_SPACE)
        if config and len(config) >= FULL_SIZE and find_ext(config, EXT_SRIOV) is not None:
            found.append(name)
    return found


def pci_functions_with_ids(host: Host, vendor: str, device: str) -> List[str]:
    """Every PCI function with this vendor:device (SR-IOV PF or not), in address order."""
    return [pci for pci in sorted(host.sysfs.listdir(PCI_DEVICES))
            if pci_id(host, pci, "vendor") == vendor and pci_id(host, pci, "device") == device]


# ---------------------------------------------------------------------------- modules


def module_name(driver: str) -> str:
    """The module a PCI driver comes in: vfio-pci -> vfio_pci (module names use underscores)."""
    return driver.replace("-", "_")


def _module_of_path(path: str) -> str:
    name = os.path.basename(path.strip())
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def kernel_release(host: Host) -> Optional[str]:
    release = host.sysfs.read("proc/sys/kernel", "osrelease")
    if release:
        return release.strip()
    return os.uname().release if host.is_real_root else None


def observe_modules(host: Host, drivers: Iterable[str]) -> ModulesState:
    release = kernel_release(host)
    directory = None
    if release:
        for base in ("/lib/modules", "/usr/lib/modules"):
            if host.sysfs.isdir(base.strip("/"), release):
                directory = f"{base}/{release}"
                break
    dep: dict = {}
    builtin: dict = {}
    problem = None
    if directory is not None:
        for name, table in (("modules.dep", dep), ("modules.builtin", builtin)):
            read = read_file(host, f"{directory}/{name}")
            if read.problem:
                problem = f"{read.path}: {read.problem}"
            for line in (read.text or "").splitlines():
                path = line.split(":", 1)[0].strip()
                if path:
                    table.setdefault(_module_of_path(path), path)
    elif release:
        problem = f"no /lib/modules/{release} (the modules of the running kernel are not installed)"
    else:
        problem = "the running kernel's release is unknown (no /proc/sys/kernel/osrelease)"
    states = []
    for driver in sorted(set(drivers)):
        module = module_name(driver)
        loaded = host.sysfs.isdir(PCI_DRIVERS, driver) or host.sysfs.isdir("sys/module", module)
        states.append(ModuleState(driver, module, loaded, builtin.get(module), dep.get(module)))
    return ModulesState(release, directory, tuple(states), problem)


# ---------------------------------------------------------------------------- boot loader


def _first_existing(host: Host, paths: Sequence[str]) -> Optional[FileRead]:
    for path in paths:
        read = read_file(host, path)
        if read.exists:
            return read
    return None


def observe_boot(host: Host) -> BootFiles:
    names, _ = list_dir(host, GRUB_DROPINS)
    dropins = tuple(read_file(host, f"{GRUB_DROPINS}/{n}") for n in (names or []) if n.endswith(".cfg"))
    entries, bls_problem = list_dir(host, BLS_ENTRIES)
    bls = tuple(read_file(host, f"{BLS_ENTRIES}/{n}") for n in (entries or []) if n.endswith(".conf"))
    return BootFiles(
        grub_defaults=read_file(host, GRUB_DEFAULTS),
        grub_dropins=dropins,
        grub_cfg=_first_existing(host, GRUB_CFG),
        bls_entries=bls,
        bls_problem=bls_problem,
        grubenv=_first_existing(host, GRUBENV),
        kernel_cmdline=read_file(host, KERNEL_CMDLINE),
        dropins_sourced=names is not None or read_file(host, DEBIAN_VERSION).exists,
    )


# ---------------------------------------------------------------------------- NetworkManager


def _nm_pid(host: Host) -> Tuple[Optional[bool], Optional[int]]:
    names, _ = list_dir(host, "/proc")
    if names is None:
        return None, None
    for pid in (p for p in names if p.isdigit()):
        if host.sysfs.read("proc", pid, "comm") == "NetworkManager":
            return True, int(pid)
    return False, None


def _nm_unmanaged_lines(host: Host) -> Tuple[Tuple[str, str], ...]:
    """udev rules that set NM_UNMANAGED=1 in a file about VFs, and NetworkManager's own unmanaged
    settings: (file, line)."""
    found: List[Tuple[str, str]] = []
    for directory in UDEV_RULES:
        names, _ = list_dir(host, directory)
        for name in names or []:
            if not name.endswith(".rules"):
                continue
            lines = [ln.strip() for ln in (read_file(host, f"{directory}/{name}").text or "").splitlines()]
            lines = [ln for ln in lines if ln and not ln.startswith("#")]
            setting = [ln for ln in lines if re.search(r'ENV\{NM_UNMANAGED\}\s*=\s*"1"', ln)]
            if setting and any(_VF_HINT.search(ln) for ln in lines):
                found.append((f"{directory}/{name}", setting[0]))
    confs = list(NM_CONF)
    for directory in NM_CONF_DIRS:
        names, _ = list_dir(host, directory)
        confs += [f"{directory}/{n}" for n in names or [] if n.endswith(".conf")]
    for path in confs:
        section = ""
        for line in (read_file(host, path).text or "").splitlines():
            stripped = line.strip()
            if stripped.startswith("[") and stripped.endswith("]"):
                section = stripped[1:-1]
            key, _, value = stripped.partition("=")
            key, value = key.strip(), value.strip()
            if stripped.startswith(("#", ";")) or not value:
                continue
            if key == "unmanaged-devices" or (section.startswith("device") and key == "managed"
                                              and value.lower() in ("0", "false", "no")):
                found.append((path, stripped))
    return tuple(found)


def observe_networkmanager(host: Host) -> NetworkManagerState:
    running, pid = _nm_pid(host)
    return NetworkManagerState(running, pid, _nm_unmanaged_lines(host) if running else ())


# ---------------------------------------------------------------------------- everything


def observe_platform(host: Host, devices: Sequence[str] = (), drivers: Iterable[str] = ()) -> PlatformState:
    """The platform as `check` sees it: kernel arguments, CPU, IOMMU, these PCI functions, these
    drivers' modules, the boot loader's files, NetworkManager, a pending reboot."""
    reboot = read_file(host, REBOOT_REQUIRED)
    vendor = read_cpu_vendor(host)
    return PlatformState(
        root=host.root,
        live=host.is_real_root,
        cmdline=read_cmdline(host),
        cpu_vendor=vendor,
        cpuinfo_problem=None if vendor else cpuinfo_problem(host),
        iommu=observe_iommu(host),
        devices=tuple(observe_function(host, pci) for pci in devices),
        modules=observe_modules(host, drivers),
        boot=observe_boot(host),
        networkmanager=observe_networkmanager(host),
        reboot_required=(reboot.text or "").strip() or None,
    )
