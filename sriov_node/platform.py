"""The platform's values: what `sriov-node check` reads of the machine, and what `check --fix`
would change in its boot loader. Values only (no I/O): host/platform.py fills them in, the checks
(sriov_node/checks/) judge them, host/bootloader.py carries a FixPlan out.

Also the PCI configuration space as the kernel exposes it in <pci>/config
(docs/kernel-sriov-spec.md §4.2): pure functions of the bytes read, used by the host (which
functions could be SR-IOV PFs) and by the checks (BIOS/firmware SR-IOV, VF BARs, ARI).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional, Tuple

# Boot-loader files, as the machine sees them
GRUB_DEFAULTS = "/etc/default/grub"
GRUB_DROPINS = "/etc/default/grub.d"
GRUB_DROPIN = GRUB_DROPINS + "/99-sriov-node.cfg"  # sriov-node's own: the only boot file it writes whole
DEBIAN_VERSION = "/etc/debian_version"
GRUB_CFG = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")
BLS_ENTRIES = "/boot/loader/entries"
GRUBENV = ("/boot/grub2/grubenv", "/boot/grub/grubenv")
KERNEL_CMDLINE = "/etc/kernel/cmdline"
REBOOT_REQUIRED = "/run/sriov-node/reboot-required"


@dataclass(frozen=True)
class FileRead:
    """One file under the root: its text, or why there is none (absent: both None)."""

    path: str  # as the machine sees it, e.g. /etc/default/grub
    text: Optional[str] = None
    problem: Optional[str] = None

    @property
    def exists(self) -> bool:
        return self.text is not None or self.problem is not None


@dataclass(frozen=True)
class IommuState:
    units: Tuple[str, ...]  # /sys/class/iommu: dmar0, ivhd0, smmu3.0x...
    groups: int  # entries of /sys/kernel/iommu_groups
    group_types: Tuple[str, ...]  # distinct `type` of the groups: identity (passthrough), DMA, DMA-FQ
    acpi_tables: Optional[Tuple[str, ...]]  # DMAR/IVRS present; None when the ACPI tables cannot be listed
    noiommu: Optional[bool]  # vfio enable_unsafe_noiommu_mode; None when vfio is not loaded


@dataclass(frozen=True)
class PciFunction:
    pci: str
    exists: bool
    vendor: Optional[str] = None
    device: Optional[str] = None
    pci_class: Optional[str] = None
    driver: Optional[str] = None
    netdevs: Tuple[str, ...] = ()
    total_vfs: Optional[int] = None  # sriov_totalvfs (absent: the kernel found no usable SR-IOV capability)
    num_vfs: Optional[int] = None
    config: Optional[bytes] = None  # <pci>/config as read (64 bytes without CAP_SYS_ADMIN)
    upstream: Optional[str] = None  # the bridge above it (its root or downstream port)
    upstream_config: Optional[bytes] = None
    ari_enabled: Optional[bool] = None  # <pci>/ari_enabled: ARI in force on its bus
    default_driver: Optional[str] = None  # what modules.alias names for it (a PF without a driver)
    vfio_enable_sriov: Optional[bool] = None  # vfio_pci's enable_sriov, when the PF is bound to vfio-pci


@dataclass(frozen=True)
class ModuleState:
    driver: str  # the PCI driver's name (vfio-pci)
    module: str  # the module's name (vfio_pci)
    loaded: bool
    builtin: Optional[str] = None  # its line in modules.builtin
    path: Optional[str] = None  # its file in modules.dep


@dataclass(frozen=True)
class ModulesState:
    release: Optional[str]
    directory: Optional[str]  # /lib/modules/<release>, when found
    drivers: Tuple[ModuleState, ...] = ()
    problem: Optional[str] = None


@dataclass(frozen=True)
class NetworkManagerState:
    running: Optional[bool]  # None: /proc cannot be read
    pid: Optional[int] = None
    unmanaged: Tuple[Tuple[str, str], ...] = ()  # (file, line) telling NetworkManager to keep off VFs


@dataclass(frozen=True)
class BootFiles:
    grub_defaults: FileRead
    grub_dropins: Tuple[FileRead, ...]  # /etc/default/grub.d/*.cfg in the order grub-mkconfig sources them
    grub_cfg: Optional[FileRead]  # the generated configuration, the first one found
    bls_entries: Tuple[FileRead, ...]
    bls_problem: Optional[str]  # why /boot/loader/entries could not be listed
    grubenv: Optional[FileRead]
    kernel_cmdline: FileRead  # /etc/kernel/cmdline (kernel-install, new kernels)
    # grub-mkconfig sources /etc/default/grub.d/*.cfg (a Debian patch: /etc/debian_version, or the
    # directory is there): check --fix writes its arguments to its own drop-in there
    dropins_sourced: bool = False

    @property
    def flavour(self) -> Optional[str]:
        """'bls' (RHEL, Fedora: grubby), 'grub' (Debian, Ubuntu: update-grub), or None."""
        if self.bls_entries or self.bls_problem:
            return "bls"
        if self.grub_defaults.exists:
            return "grub"
        return None


@dataclass(frozen=True)
class PlatformState:
    root: str
    live: bool  # the machine sriov-node runs on (root /)
    cmdline: FileRead
    cpu_vendor: Optional[str]  # GenuineIntel, AuthenticAMD; None when /proc/cpuinfo names none
    iommu: IommuState
    devices: Tuple[PciFunction, ...] = ()
    modules: Optional[ModulesState] = None
    boot: Optional[BootFiles] = None
    networkmanager: Optional[NetworkManagerState] = None
    reboot_required: Optional[str] = None
    cpuinfo_problem: Optional[str] = None  # why /proc/cpuinfo could not be read ("absent", ...); None when it was

    def device(self, pci: str) -> Optional[PciFunction]:
        return next((d for d in self.devices if d.pci == pci), None)


# ---------------------------------------------------------------------------- check --fix


@dataclass(frozen=True)
class FileChange:
    path: str  # as the machine sees it
    old: str
    new: str
    own: bool = False  # sriov-node's own file (the GRUB drop-in): written whole, never through a link
    created: bool = False  # such a file, not there yet (old is "")

    def diff(self) -> str:
        import difflib  # only --fix shows diffs: not on apply's preflight path

        return "".join(difflib.unified_diff(self.old.splitlines(True), self.new.splitlines(True),
                                            "/dev/null" if self.created else f"{self.path} (now)",
                                            f"{self.path} (fixed)"))


@dataclass(frozen=True)
class Command:
    argv: Tuple[str, ...]  # as shown; argv[0] is the tool's name
    run: bool  # False: printed for a person to run
    why_not: Optional[str] = None
    program: Optional[str] = None  # the tool found on PATH
    backup: Tuple[str, ...] = ()  # files to copy aside before it runs (it edits them itself)
    missing: Optional[str] = None  # the tool is nowhere it would be run from: what, where, which package

    def display(self) -> str:
        import shlex

        return " ".join(shlex.quote(a) for a in self.argv)


@dataclass(frozen=True)
class FixPlan:
    needed: Tuple[str, ...]
    changes: Tuple[FileChange, ...] = ()
    commands: Tuple[Command, ...] = ()
    problems: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    reboot: bool = False  # the running kernel lacks what the next boot gets
    summary: str = ""
    blocked: bool = False  # a tool the next boot depends on is missing: nothing may be written

    @property
    def tools(self) -> Tuple[str, ...]:
        return tuple(c.argv[2] if c.argv[0] == "chroot" else c.argv[0] for c in self.commands)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.commands


# ---------------------------------------------------------------------------- PCI configuration space
# PCI configuration space as the kernel exposes it in <pci>/config (docs/kernel-sriov-spec.md §4.2).
# 
# Pure functions of the bytes read: the standard capability list (from 0x34), the extended one
# (from 0x100: a u32 header, ID in bits 0-15, next offset in bits 20-31), the SR-IOV capability
# (ID 0x0010) and the PCI Express capability's Device Capabilities 2 (ARI forwarding, bit 5).

EXT_START = 0x100
FULL_SIZE = 4096
STANDARD_SIZE = 256
CAP_PCIE = 0x10  # standard capability: PCI Express
EXT_ARI = 0x000E
EXT_SRIOV = 0x0010
ARI_FORWARDING = 1 << 5  # DevCap2 "ARI Forwarding Supported", DevCtl2 "ARI Forwarding Enable"


def _u8(b: bytes, off: int) -> int:
    return b[off]


def _u16(b: bytes, off: int) -> int:
    return struct.unpack_from("<H", b, off)[0]


def _u32(b: bytes, off: int) -> int:
    return struct.unpack_from("<I", b, off)[0]


@dataclass(frozen=True)
class VfBar:
    index: int  # BAR0-5 (a 64-bit BAR takes two)
    address: int
    is_64: bool
    prefetchable: bool

    def describe(self) -> str:
        kind = ("64-bit" if self.is_64 else "32-bit") + (", prefetchable" if self.prefetchable else "")
        return f"VF BAR{self.index} at {self.address:#x} ({kind})"


@dataclass(frozen=True)
class SriovCap:
    offset: int
    control: int
    initial_vfs: int
    total_vfs: int
    num_vfs: int
    first_vf_offset: int
    vf_stride: int
    vf_device: int
    bars: Tuple[VfBar, ...]  # the implemented VF BARs (a register that reads 0 is not)

    @property
    def vf_enable(self) -> bool:
        return bool(self.control & 0x1)

    @property
    def ari_hierarchy(self) -> bool:
        return bool(self.control & 0x10)

    @property
    def bars_assigned(self) -> bool:
        """Some VF BAR holds an address (all zero: no MMIO was reserved for the VFs)."""
        return any(bar.address for bar in self.bars)

    def describe(self) -> str:
        return (f"SR-IOV capability at {self.offset:#x}: TotalVFs {self.total_vfs}, InitialVFs {self.initial_vfs}, "
                f"NumVFs {self.num_vfs}, VF offset {self.first_vf_offset} stride {self.vf_stride}, "
                f"VF device ID {self.vf_device:04x}")


def extended_caps(config: bytes) -> Tuple[Tuple[int, int], ...]:
    """(capability ID, offset) of the extended capability list, in list order."""
    found = []
    offset = EXT_START
    seen = set()
    while EXT_START <= offset and offset + 4 <= len(config) and offset not in seen:
        seen.add(offset)
        header = _u32(config, offset)
        if header in (0, 0xFFFFFFFF):
            break
        found.append((header & 0xFFFF, offset))
        offset = (header >> 20) & 0xFFC
    return tuple(found)


def standard_caps(config: bytes) -> Tuple[Tuple[int, int], ...]:
    """(capability ID, offset) of the standard list, when the header says it has one."""
    if len(config) < 0x40 or not _u16(config, 0x06) & 0x10:  # Status: Capabilities List
        return ()
    found = []
    offset = _u8(config, 0x34) & 0xFC
    seen = set()
    while 0x40 <= offset and offset + 2 <= len(config) and offset not in seen:
        seen.add(offset)
        found.append((_u8(config, offset), offset))
        offset = _u8(config, offset + 1) & 0xFC
    return tuple(found)


def find_ext(config: bytes, cap_id: int) -> Optional[int]:
    return next((off for cid, off in extended_caps(config) if cid == cap_id), None)


def _vf_bars(config: bytes, base: int) -> Tuple[VfBar, ...]:
    bars = []
    i = 0
    while i < 6:
        reg = _u32(config, base + 0x24 + 4 * i)
        if reg == 0:
            i += 1
            continue
        is_64 = (reg >> 1) & 0x3 == 0x2
        address = reg & ~0xF
        if is_64 and i < 5:
            address |= _u32(config, base + 0x24 + 4 * (i + 1)) << 32
        bars.append(VfBar(i, address, is_64, bool(reg & 0x8)))
        i += 2 if is_64 else 1
    return tuple(bars)


def sriov_cap(config: bytes) -> Optional[SriovCap]:
    off = find_ext(config, EXT_SRIOV)
    if off is None or off + 0x40 > len(config):
        return None
    return SriovCap(
        offset=off,
        control=_u16(config, off + 0x08),
        initial_vfs=_u16(config, off + 0x0C),
        total_vfs=_u16(config, off + 0x0E),
        num_vfs=_u16(config, off + 0x10),
        first_vf_offset=_u16(config, off + 0x14),
        vf_stride=_u16(config, off + 0x16),
        vf_device=_u16(config, off + 0x1A),
        bars=_vf_bars(config, off),
    )


@dataclass(frozen=True)
class PcieCap:
    offset: int
    version: int
    port_type: int  # 0 endpoint, 4 root port, 5 switch upstream, 6 switch downstream, 9 RCiEP
    devcap2: Optional[int]  # None before capability version 2
    devctl2: Optional[int]

    @property
    def ari_forwarding_supported(self) -> Optional[bool]:
        return None if self.devcap2 is None else bool(self.devcap2 & ARI_FORWARDING)

    @property
    def ari_forwarding_enabled(self) -> Optional[bool]:
        return None if self.devctl2 is None else bool(self.devctl2 & ARI_FORWARDING)


PORT_TYPES = {0: "endpoint", 1: "legacy endpoint", 4: "root port", 5: "switch upstream port",
              6: "switch downstream port", 7: "PCIe-to-PCI bridge", 8: "PCI-to-PCIe bridge",
              9: "root complex integrated endpoint", 10: "root complex event collector"}


def pcie_cap(config: bytes) -> Optional[PcieCap]:
    off = next((o for cid, o in standard_caps(config) if cid == CAP_PCIE), None)
    if off is None or off + 0x04 > len(config):
        return None
    flags = _u16(config, off + 0x02)
    version, port_type = flags & 0xF, (flags >> 4) & 0xF
    has2 = version >= 2 and off + 0x2A <= len(config)
    return PcieCap(off, version, port_type,
                   _u32(config, off + 0x24) if has2 else None,
                   _u16(config, off + 0x28) if has2 else None)


# ---------------------------------------------------------------------------- the RDMA namespace mode

IB_CORE_NETNS_MODE = "/sys/module/ib_core/parameters/netns_mode"  # bool: Y shared, N exclusive (device.c)
RDMA_MODPROBE_FILE = "/etc/modprobe.d/sriov-node-rdma.conf"  # sriov-node's own: `options ib_core netns_mode=0|1`
RDMA_NETNS_RECORD = "/var/lib/sriov-node/rdma-netns.json"  # a mode left for the next boot, and that boot's id
BOOT_ID = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True)
class RdmaNetnsState:
    """ib_core's network namespace mode as `check` reads it.

    now: the running ib_core's mode ("shared" | "exclusive"; None: ib_core is not loaded, it takes
    next_load when it loads); next_load: what the modprobe.d options give it at its next load (no
    option: "shared", the module's default), from option_file; pending: the record `check --fix` left
    when the mode could only be given to the next boot ({"wanted", "boot_id", "time"}); boot_id: this
    boot's; tool: the rdma tool that sets it at run time, or None."""

    wanted: Optional[str]
    now: Optional[str]
    next_load: str = "shared"
    option_file: Optional[str] = None
    pending: Optional[dict] = None
    boot_id: Optional[str] = None
    tool: Optional[str] = None

    @property
    def rebooted_since(self) -> bool:
        """The pending record is from an earlier boot (the reboot it asked for happened)."""
        return bool(self.pending) and self.pending.get("boot_id") != self.boot_id
