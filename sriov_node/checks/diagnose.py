"""The platform checks: pure functions of an observed PlatformState and what the config wants.

Each check has an id, a status (ok / warn / fail / skip), what was seen and the fix. A check that
cannot know (a file it may not read, config space cut to 64 bytes) says "skip" and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node import platform as pcicfg
from sriov_node.checks import bootcfg, kargs
from sriov_node.drivers import makes_vfs, no_vfs_why
from sriov_node.platform import BootFiles, PciFunction, PlatformState

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

VENDOR_HINTS = {
    "15b3": "Mellanox/NVIDIA: mlxconfig -d {pci} set SRIOV_EN=1 NUM_OF_VFS=<n>, then a cold reboot",
    "8086": "Intel: 'SR-IOV Support' in the BIOS, and the NIC's own SR-IOV setting in its device configuration menu",
    "14e4": "Broadcom: enable SR-IOV in the BIOS and in the NIC's NVM (bnxtnvm or niccli)",
}
IOMMU_PREFIXES = ("intel_iommu=", "amd_iommu=", "iommu=", "iommu.")


@dataclass(frozen=True)
class CheckResult:
    id: str
    status: str
    seen: str
    fix: Optional[str] = None
    subject: Optional[str] = None  # the PF, driver or file the check is about
    block: Optional[str] = None  # the config block ("pf[0]") it comes from

    def to_dict(self) -> Dict[str, Any]:
        return {"id": self.id, "subject": self.subject, "block": self.block, "status": self.status,
                "seen": self.seen, "fix": self.fix}


@dataclass(frozen=True)
class PfWant:
    """A PCI function the checks look at, and what the config wants of it."""

    pci: str
    block: Optional[str] = None
    num_vfs: Optional[int] = None  # None: no block asks for VFs
    problem: Optional[str] = None  # why the block does not fit this PF (resolution)
    label: Optional[str] = None  # "0000:20:00.0 (ens1f0)"
    survey: bool = False  # no block asks a VF count: can it make VFs at all (ARI judged on its TotalVFs)
    severity: Optional[str] = None  # the status of what stops it making VFs (default: fail, warn for num_vfs 0)
    unasked: bool = False  # nothing named it (no config): a function without any SR-IOV is only a warning


@dataclass(frozen=True)
class Scope:
    """What the config (or its absence) asks of the platform."""

    has_config: bool
    pfs: Tuple[PfWant, ...] = ()
    unmatched: Tuple[Tuple[str, str], ...] = ()  # (block or --pf selector, why it selects nothing)
    drivers: Tuple[str, ...] = ()  # driver names the config gives VFs
    vfio: bool = True  # some VF group wants vfio-pci (assumed without a config)
    netdev_vfs: bool = True  # some VF gets a network driver (NetworkManager sees it)
    notes: Tuple[CheckResult, ...] = ()  # blocks that are only notes here (fleet rules matching nothing)
    survey: bool = False  # nothing asked of any PF: which functions can make VFs (vf_capable)
    survey_severity: Optional[str] = None  # the status of "nothing here can make VFs" (warn: an empty config)


@dataclass
class Report:
    results: List[CheckResult] = field(default_factory=list)

    def add(self, result: CheckResult) -> None:
        self.results.append(result)

    @property
    def counts(self) -> Dict[str, int]:
        return {s: sum(1 for r in self.results if r.status == s) for s in STATUSES}

    @property
    def failed(self) -> bool:
        return any(r.status == FAIL for r in self.results)


# ---------------------------------------------------------------------------- the platform


def cmdline_words(state: PlatformState) -> Optional[Tuple[str, ...]]:
    return None if state.cmdline.text is None else kargs.split_cmdline(state.cmdline.text)


def vtd(state: PlatformState) -> bool:
    """The IOMMU is (or would be) Intel VT-d: an Intel CPU, a DMAR table, or dmar units."""
    tables = state.iommu.acpi_tables or ()
    return state.cpu_vendor == "GenuineIntel" or "DMAR" in tables or any(u.startswith("dmar") for u in state.iommu.units)


def amdvi(state: PlatformState) -> bool:
    tables = state.iommu.acpi_tables or ()
    return state.cpu_vendor in ("AuthenticAMD", "HygonGenuine") or "IVRS" in tables \
        or any(u.startswith("ivhd") for u in state.iommu.units)


def x86(state: PlatformState) -> bool:
    return vtd(state) or amdvi(state)


def needed(state: PlatformState) -> Tuple[str, ...]:
    """The arguments vfio-pci needs here (nothing off x86: the recipe is x86's)."""
    return kargs.needed_args(vtd(state)) if x86(state) else ()


def relevant(words: Sequence[str]) -> str:
    shown = [w for w in words if w.startswith(IOMMU_PREFIXES)]
    return " ".join(shown) if shown else "no IOMMU argument"


def recipe_change(words: Sequence[str], want: Sequence[str]) -> str:
    """What --fix does to these words: 'adds X; removes Y' (empty when nothing)."""
    fixed = kargs.fix_words(words, want)
    add = [w for w in fixed if w not in words]
    drop = [w for w in dict.fromkeys(words) if w not in fixed]
    return "; ".join(p for p in (f"adds {' '.join(add)}" if add else "", f"removes {' '.join(drop)}" if drop else "")
                     if p)


def turned_off(state: PlatformState, words: Sequence[str]) -> bool:
    """Whether these arguments switch this platform's IOMMU off."""
    args = kargs.iommu_args(words)
    return args.iommu_off or (vtd(state) and args.intel is False) or (amdvi(state) and args.amd_off)


def _shortfall(words: Sequence[str], want: Sequence[str]) -> List[str]:
    """What a command line lacks of the recipe, or has against it, in words."""
    add = kargs.missing(words, want)
    drop = kargs.contradicting(words)
    lacking = [a for a in add if a not in words]
    overridden = [a for a in add if a in words]
    return ([f"lacks {' '.join(lacking)}"] if lacking else []) \
        + ([f"{' '.join(overridden)} is overridden by a later argument"] if overridden else []) \
        + ([f"{' '.join(drop)} contradicts the recipe"] if drop else [])


def _recipe_fix(state: PlatformState, words: Sequence[str]) -> str:
    want = needed(state)
    if state.boot is not None and words == (cmdline_words(state) or ()):
        nb = next_boot(state.boot, want)
        if nb.words is not None and not kargs.wants_change(nb.words, want):
            return f"reboot: the next boot already has {' '.join(want)} ({nb.source})"
    return f"sriov-node check --fix ({recipe_change(words, want) or 'the boot loader'}), then reboot"


def check_cpu(state: PlatformState) -> CheckResult:
    vendor = state.cpu_vendor or "CPU vendor unknown"
    tables = state.iommu.acpi_tables or ()
    if vtd(state):
        seen = "DMAR" in tables or any(u.startswith("dmar") for u in state.iommu.units)
        kind = ("is Intel VT-d" + (" (DMAR table)" if state.cpu_vendor != "GenuineIntel" else "")) if seen \
            else "would be Intel VT-d (an Intel CPU; no DMAR table seen)"
        return CheckResult("cpu", OK, f"{vendor}; the IOMMU {kind}: vfio-pci needs intel_iommu=on iommu=pt")
    if amdvi(state):
        seen = "IVRS" in tables or any(u.startswith("ivhd") for u in state.iommu.units)
        kind = "is AMD-Vi (on by default)" if seen else "would be AMD-Vi (an AMD CPU; no IVRS table seen)"
        return CheckResult("cpu", OK, f"{vendor}; the IOMMU {kind}: vfio-pci needs iommu=pt")
    if state.cpuinfo_problem:
        return CheckResult("cpu", SKIP, f"the CPU vendor is unknown: /proc/cpuinfo cannot be read "
                                        f"({state.cpuinfo_problem}) and no DMAR/IVRS table is visible",
                           "on the node itself, grep vendor_id /proc/cpuinfo: GenuineIntel needs intel_iommu=on "
                           "iommu=pt, AuthenticAMD iommu=pt")
    return CheckResult("cpu", SKIP, f"/proc/cpuinfo names no x86 vendor ({state.cpu_vendor or 'no vendor_id'}) and no "
                                    "DMAR/IVRS table is visible: the kernel-argument recipe here is for Intel and AMD",
                       "on other architectures turn the IOMMU on as the platform documents (e.g. iommu.passthrough=1 "
                       "on arm64)")


def check_iommu(state: PlatformState, wants_vfio: bool) -> CheckResult:
    io = state.iommu
    words = cmdline_words(state) or ()
    args = kargs.iommu_args(words)
    if io.groups:
        units = ", ".join(io.units) if io.units else "no /sys/class/iommu entry"
        return CheckResult("iommu", OK, f"on: {units}; {io.groups} IOMMU group(s) in /sys/kernel/iommu_groups")
    seen = ["off: /sys/kernel/iommu_groups is empty"]
    fixes = []
    tables = io.acpi_tables
    firmware_off = tables is not None and not tables
    off_words = list(args.offending)
    if firmware_off:
        seen.append("the firmware gives no DMAR (Intel VT-d) or IVRS (AMD-Vi) ACPI table: the IOMMU is off in "
                    "the BIOS/UEFI setup (or the machine has none)")
        fixes.append("enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the BIOS/UEFI setup")
    elif tables is None:
        seen.append("whether the firmware provides an IOMMU is unknown (/sys/firmware/acpi/tables cannot be listed)")
    if args.iommu_off or (vtd(state) and args.intel is False) or (amdvi(state) and args.amd_off):
        seen.append(f"the kernel command line turns it off: {' '.join(off_words)} in /proc/cmdline")
    elif off_words:
        seen.append(f"the kernel command line also has {' '.join(off_words)} (/proc/cmdline)")
    elif vtd(state) and not args.intel_on and not firmware_off:
        present = "VT-d is present (DMAR table) but " if "DMAR" in (tables or ()) else ""
        seen.append(f"{present}intel_iommu=on is not on the kernel command line (and this kernel left VT-d off "
                    "without it)")
    if off_words or (vtd(state) and not args.intel_on):
        fixes.append(_recipe_fix(state, words))
    elif not firmware_off:
        fixes.append("check dmesg | grep -i -e DMAR -e AMD-Vi -e IOMMU for why the kernel did not enable it")
    fix = "; ".join(fixes)
    if not wants_vfio:
        return CheckResult("iommu", WARN, "; ".join(seen) + " (only vfio-pci needs it, and no VF group asks for it)",
                           fix)
    if io.noiommu:
        return CheckResult("iommu", WARN, "; ".join(seen) + "; vfio runs in unsafe no-IOMMU mode "
                           "(enable_unsafe_noiommu_mode=Y): vfio-pci binds, but a VF's DMA can reach all host memory",
                           fix)
    return CheckResult("iommu", FAIL, "; ".join(seen) + ": vfio-pci cannot bind VFs without an IOMMU group", fix)


def check_passthrough(state: PlatformState, wants_vfio: bool) -> CheckResult:
    io = state.iommu
    if not io.groups:
        return CheckResult("iommu_passthrough", SKIP, "the IOMMU is off")
    if not x86(state):
        return CheckResult("iommu_passthrough", SKIP, "not an x86 IOMMU: iommu=pt does not apply")
    args = kargs.iommu_args(cmdline_words(state) or ())
    types = ", ".join(io.group_types) or "unknown"
    if set(io.group_types) == {"identity"}:
        return CheckResult("iommu_passthrough", OK, f"every IOMMU group is of type identity (passthrough)"
                                                    f"{'; iommu=pt is on the command line' if args.passthrough else ''}")
    if not wants_vfio:
        return CheckResult("iommu_passthrough", OK, f"IOMMU groups of type {types}; iommu=pt matters only with "
                                                    "vfio-pci, and no VF group asks for it")
    return CheckResult("iommu_passthrough", WARN,
                       f"IOMMU groups of type {types}: the host's own DMA goes through IOMMU translation "
                       "(no iommu=pt), which costs host drivers throughput",
                       _recipe_fix(state, cmdline_words(state) or ()))


def check_kernel_args(state: PlatformState, wants_vfio: bool) -> CheckResult:
    words = cmdline_words(state)
    if words is None:
        return CheckResult("kernel_args", SKIP, f"/proc/cmdline cannot be read: {state.cmdline.problem or 'absent'}")
    want = needed(state)
    if not wants_vfio or not want:
        why = "no VF group wants vfio-pci" if want else "no x86 IOMMU recipe applies"
        return CheckResult("kernel_args", OK, f"running kernel has {relevant(words)}; {why}: nothing is required")
    add = kargs.missing(words, want)
    seen = f"running kernel (/proc/cmdline) has {relevant(words)}"
    parts = _shortfall(words, want)
    if not parts:
        return CheckResult("kernel_args", OK, seen)
    status = FAIL if turned_off(state, words) or (kargs.INTEL_ON in add and not state.iommu.groups) else WARN
    if status == WARN and kargs.INTEL_ON in add:
        parts.append("VT-d is on by this kernel's default; intel_iommu=on keeps it on under another kernel")
    return CheckResult("kernel_args", status, f"{seen}: " + "; ".join(parts), _recipe_fix(state, words))


# ---------------------------------------------------------------------------- the boot loader


@dataclass(frozen=True)
class NextBoot:
    """What the boot loader will give the next boot's kernel, and where that was read."""

    words: Optional[Tuple[str, ...]]  # None: cannot tell
    source: str
    problem: Optional[str] = None
    pending: Optional[str] = None  # a source file has the arguments, the generated configuration not yet
    others: Tuple[str, ...] = ()  # other places that lack the arguments (other entries, new kernels)


def grub_sources(boot: BootFiles) -> List[bootcfg.GrubSource]:
    files = [boot.grub_defaults] + list(boot.grub_dropins)
    return [bootcfg.GrubSource(f.path, f.text) for f in files if f.text is not None]


def _unreadable(boot: BootFiles) -> List[str]:
    files = [boot.grub_defaults] + list(boot.grub_dropins)
    return [f"{f.path}: {f.problem}" for f in files if f.problem]


def next_boot(boot: BootFiles, want: Sequence[str]) -> NextBoot:
    if boot.flavour == "grub":
        bad = _unreadable(boot)
        if bad:
            return NextBoot(None, "/etc/default/grub", "; ".join(bad))
        ev = bootcfg.evaluate_grub(grub_sources(boot))
        if ev.uncertain:
            return NextBoot(None, "/etc/default/grub", "cannot evaluate " + "; ".join(ev.uncertain))
        cfg = boot.grub_cfg
        if cfg is not None and cfg.text is not None:
            entry = bootcfg.grub_cfg_first_entry(cfg.text)
            if entry is not None:
                pending = None
                if kargs.wants_change(entry[1], want) and not kargs.wants_change(ev.words, want):
                    sources = "/etc/default/grub" + (" (with /etc/default/grub.d)" if boot.grub_dropins else "")
                    pending = (f"{sources} has the arguments but {cfg.path} was not regenerated since "
                               "(run update-grub)")
                return NextBoot(entry[1], f"first entry of {cfg.path}, {entry[0]}", pending=pending)
        note = f"; {cfg.path}: {cfg.problem}" if cfg is not None and cfg.problem else ""
        return NextBoot(ev.words, "/etc/default/grub" + (" and /etc/default/grub.d" if boot.grub_dropins else "")
                        + note)
    if boot.flavour == "bls":
        if boot.bls_problem:
            return NextBoot(None, "/boot/loader/entries", boot.bls_problem)
        env = bootcfg.parse_grubenv(boot.grubenv.text or "") if boot.grubenv else {}
        entries = bootcfg.bls_entries([(f.path, f.text) for f in boot.bls_entries if f.text is not None], env)
        unreadable = [f"{f.path}: {f.problem}" for f in boot.bls_entries if f.problem]
        if unreadable:
            return NextBoot(None, "/boot/loader/entries", "; ".join(unreadable))
        default = bootcfg.default_bls(entries, env)
        if default is None:
            return NextBoot(None, "/boot/loader/entries", "no entry")
        others = [f"entry {e.id}" for e in entries if e is not default and "rescue" not in e.id
                  and kargs.wants_change(e.words, want)]
        if boot.kernel_cmdline.text is not None and kargs.wants_change(
                kargs.split_cmdline(boot.kernel_cmdline.text), want):
            others.append("/etc/kernel/cmdline (kernels installed later)")
        if boot.grub_defaults.text is not None:
            ev = bootcfg.evaluate_grub(grub_sources(boot))
            if not ev.uncertain and kargs.wants_change(kargs.split_cmdline(ev.values[bootcfg.LINUX]), want):
                others.append("GRUB_CMDLINE_LINUX in /etc/default/grub (a later grub2-mkconfig)")
        return NextBoot(default.words, f"default entry {default.path}", others=tuple(others))
    return NextBoot(None, "", "no boot loader configuration found (/etc/default/grub, /boot/loader/entries)")


def check_bootloader(state: PlatformState, wants_vfio: bool) -> CheckResult:
    want = needed(state)
    running = cmdline_words(state)
    have = f"running kernel has {relevant(running)}" if running is not None else "/proc/cmdline cannot be read"
    if not wants_vfio or not want:
        return CheckResult("bootloader", OK, f"{have}; nothing is required of the next boot "
                                             f"({'no VF group wants vfio-pci' if want else 'no x86 IOMMU recipe'})")
    boot = state.boot
    if boot is None:
        return CheckResult("bootloader", SKIP, "the boot loader was not read")
    nb = next_boot(boot, want)
    if nb.words is None:
        return CheckResult("bootloader", SKIP, f"{have}; cannot tell what the next boot will have: {nb.problem}",
                           "run sriov-node check as root" if "permission" in (nb.problem or "") else None,
                           subject=boot.flavour)
    seen = f"{have}; next boot will have {relevant(nb.words)} ({nb.source})"
    parts = _shortfall(nb.words, want)
    if parts:
        status = FAIL if kargs.missing(nb.words, want) or turned_off(state, nb.words) else WARN
        fix = "run update-grub, then reboot" if nb.pending else _recipe_fix(state, nb.words)
        return CheckResult("bootloader", status, seen + ": " + "; ".join(parts) + (f"; {nb.pending}" if nb.pending
                                                                                    else ""), fix, subject=boot.flavour)
    if nb.others:
        return CheckResult("bootloader", WARN, seen + "; these lack them: " + ", ".join(nb.others),
                           "sriov-node check --fix (it updates every entry, /etc/kernel/cmdline and "
                           "GRUB_CMDLINE_LINUX)", subject=boot.flavour)
    reboot = ""
    if running is not None and kargs.wants_change(running, want):
        reboot = "; the running kernel lacks them: reboot" + (
            " (recorded in /run/sriov-node/reboot-required)" if state.reboot_required else "")
    return CheckResult("bootloader", OK, seen + reboot, subject=boot.flavour)


# ---------------------------------------------------------------------------- per PF


def _severity(want: PfWant) -> str:
    if want.severity is not None:
        return want.severity
    return WARN if want.num_vfs == 0 else FAIL


def check_pf_driver(dev: PciFunction, want: PfWant) -> Optional[CheckResult]:
    if dev.total_vfs is None:
        return None  # not an SR-IOV PF as the kernel sees it: sriov_capability says why
    who = want.label or dev.pci
    if dev.driver is None:
        load = f"modprobe {dev.default_driver}" if dev.default_driver else \
            f"load its driver (lspci -k -s {dev.pci} names the candidates)"
        return CheckResult("pf_driver", _severity(want),
                           f"no driver is bound to PF {who}: the kernel cannot create VFs (sriov_numvfs writes fail "
                           "with ENOENT)", f"{load}; if it is loaded, dmesg says why its probe failed",
                           dev.pci, want.block)
    if dev.driver == "vfio-pci":
        if dev.vfio_enable_sriov:
            return CheckResult("pf_driver", OK, f"PF {who} is bound to vfio-pci, loaded with enable_sriov=1",
                               subject=dev.pci, block=want.block)
        return CheckResult("pf_driver", _severity(want),
                           f"PF {who} is bound to vfio-pci, which creates VFs only when loaded with enable_sriov=1",
                           "load vfio-pci with enable_sriov=1 (options vfio-pci enable_sriov=1 in /etc/modprobe.d), "
                           "or bind the PF to its network driver", dev.pci, want.block)
    # the driver table's answer, preflight's too (drivers.makes_vfs)
    known = makes_vfs(dev.driver)
    if known is False:
        return CheckResult("pf_driver", _severity(want), f"PF {who} is bound to {dev.driver}: "
                           f"{no_vfs_why(dev.driver)}; it cannot create VFs",
                           f"bind the PF to its own driver (lspci -k -s {dev.pci})", dev.pci, want.block)
    if known:
        return CheckResult("pf_driver", OK, f"PF {who} is bound to {dev.driver}, which creates VFs through sriov_numvfs",
                           subject=dev.pci, block=want.block)
    return CheckResult("pf_driver", WARN,
                       f"PF {who} is bound to {dev.driver}, a driver sriov-node does not know: whether it creates "
                       "VFs through sriov_numvfs shows at the first apply",
                       f"if apply reports ENOENT, {dev.driver} lacks sysfs SR-IOV support: use its own VF module "
                       "parameter (e.g. max_vfs)", dev.pci, want.block)


def _firmware_hint(dev: PciFunction) -> str:
    hint = VENDOR_HINTS.get(dev.vendor or "", "enable SR-IOV in the BIOS/UEFI setup and in the NIC's firmware settings")
    return hint.format(pci=dev.pci)


def check_sriov_capability(dev: PciFunction, want: PfWant) -> CheckResult:
    who = want.label or dev.pci
    config = dev.config
    path = f"/sys/bus/pci/devices/{dev.pci}/config"
    if config is None:
        return CheckResult("sriov_capability", SKIP, f"{path} cannot be read", None, dev.pci, want.block)
    if len(config) < pcicfg.STANDARD_SIZE:
        return CheckResult("sriov_capability", SKIP,
                           f"only {len(config)} bytes of {path} are readable (the kernel shows the rest to "
                           "CAP_SYS_ADMIN only): the extended capabilities at 0x100 cannot be seen",
                           "run sriov-node check as root", dev.pci, want.block)
    if len(config) < pcicfg.FULL_SIZE:
        return CheckResult("sriov_capability", _severity(want),
                           f"{path} has {len(config)} bytes: the kernel has no extended configuration space for "
                           f"PF {who} (a conventional PCI device, or ECAM/MMCONFIG unavailable, e.g. pci=nommconf), "
                           "and SR-IOV lives there", "enable MMCONFIG/ECAM (PCIe) in the BIOS; do not boot with "
                           "pci=nommconf", dev.pci, want.block)
    cap = pcicfg.sriov_cap(config)
    if cap is None:
        if want.survey:
            kind = "network function" if (dev.pci_class or "").startswith("02") else "function"
            return CheckResult("sriov_capability", WARN if want.unasked else _severity(want),
                               f"{kind} {who}: no SR-IOV capability (ID 0x0010) in the extended capability list of "
                               f"{path}: it cannot make VFs: SR-IOV is disabled in the BIOS/firmware, or the device "
                               "has none", "if this device supports SR-IOV: " + _firmware_hint(dev), dev.pci,
                               want.block)
        return CheckResult("sriov_capability", _severity(want),
                           f"PF {who}: no SR-IOV capability (ID 0x0010) in the extended capability list of {path}: "
                           "SR-IOV is disabled in the BIOS/firmware, or the device has none",
                           _firmware_hint(dev), dev.pci, want.block)
    if cap.total_vfs == 0:
        return CheckResult("sriov_capability", _severity(want),
                           f"PF {who}: {cap.describe()}: TotalVFs 0 means the firmware disabled SR-IOV "
                           "(the kernel then shows no sriov_* files)", _firmware_hint(dev), dev.pci, want.block)
    if not cap.bars_assigned:
        bars = ", ".join(b.describe() for b in cap.bars) or "no VF BAR"
        return CheckResult("sriov_capability", _severity(want),
                           f"PF {who}: {cap.describe()}; {bars}: no MMIO is reserved for the VFs, so enabling "
                           "them fails with ENOMEM ('not enough MMIO resources for SR-IOV' in dmesg)",
                           "enable 'SR-IOV Support' and 'Above 4G Decoding' in the BIOS, or boot with pci=realloc",
                           dev.pci, want.block)
    extra = ""
    if dev.total_vfs is not None and dev.total_vfs != cap.total_vfs:
        extra = f"; the PF driver limits sriov_totalvfs to {dev.total_vfs}"
    bars = ", ".join(b.describe() for b in cap.bars if b.address)
    if dev.total_vfs is None:
        return CheckResult("sriov_capability", _severity(want),
                           f"PF {who}: {cap.describe()}; {bars}; but the kernel shows no sriov_totalvfs for it: it "
                           "did not set SR-IOV up, so VFs cannot be created through sysfs",
                           "a kernel built with CONFIG_PCI_IOV=y; dmesg | grep -i sr-iov says why it gave up",
                           dev.pci, want.block)
    return CheckResult("sriov_capability", OK, f"PF {who}: {cap.describe()}; {bars}{extra}",
                       subject=dev.pci, block=want.block)


def _total_vfs(dev: PciFunction) -> Optional[int]:
    """What the PF can make at most: sriov_totalvfs, else TotalVFs of its SR-IOV capability."""
    if dev.total_vfs is not None:
        return dev.total_vfs
    cap = pcicfg.sriov_cap(dev.config) if dev.config and len(dev.config) >= pcicfg.FULL_SIZE else None
    return cap.total_vfs if cap is not None else None


def check_ari(dev: PciFunction, want: PfWant) -> Optional[CheckResult]:
    who = want.label or dev.pci
    if want.survey and want.num_vfs is None:
        total = _total_vfs(dev)
        if not total:
            return None  # it makes no VF: sriov_capability says why
        count, wanted = total, f"up to {total} VFs (TotalVFs)"
    elif want.num_vfs is None:
        return None
    else:
        count, wanted = want.num_vfs, f"{want.num_vfs} VF(s) wanted"
    if count <= 7:
        return CheckResult("ari", OK, f"PF {who}: {wanted}: 7 or fewer need no ARI",
                           subject=dev.pci, block=want.block)
    if dev.upstream is None:
        return CheckResult("ari", SKIP, f"PF {who} ({wanted}) sits on a root bus without a bridge above it (an integrated "
                                        "endpoint): ARI forwarding does not apply", subject=dev.pci, block=want.block)
    own = pcicfg.find_ext(dev.config, pcicfg.EXT_ARI) is not None if dev.config and len(dev.config) >= pcicfg.FULL_SIZE else None
    port = pcicfg.pcie_cap(dev.upstream_config) if dev.upstream_config else None
    enabled = "" if dev.ari_enabled is None else f"; ari_enabled reads {int(dev.ari_enabled)}"
    if port is None or port.devcap2 is None:
        if dev.ari_enabled:
            return CheckResult("ari", OK, f"PF {who}: the kernel enabled ARI on its bus (ari_enabled 1): "
                                          f"{count} VFs can be routed", subject=dev.pci, block=want.block)
        short = dev.upstream_config is not None and len(dev.upstream_config) < pcicfg.STANDARD_SIZE
        why = ("its configuration space is cut to 64 bytes without CAP_SYS_ADMIN" if short
               else "it has no PCI Express capability version 2")
        return CheckResult("ari", SKIP, f"PF {who}: cannot read ARI forwarding of the port above it, {dev.upstream}: "
                                        f"{why}{enabled}", "run sriov-node check as root" if short else None,
                           dev.pci, want.block)
    kind = pcicfg.PORT_TYPES.get(port.port_type, "port")
    if port.ari_forwarding_supported:
        own_text = "" if own is None else ("; the PF has the ARI capability" if own else
                                           "; the PF itself has no ARI capability, so it uses its non-ARI VF offsets")
        state = "enabled" if port.ari_forwarding_enabled else "not enabled"
        return CheckResult("ari", OK, f"PF {who}: {wanted}; {kind} {dev.upstream} supports ARI forwarding ({state})"
                                      f"{own_text}{enabled}", subject=dev.pci, block=want.block)
    return CheckResult("ari", WARN,
                       f"PF {who}: {wanted}; {kind} {dev.upstream} does not support ARI forwarding (DevCap2 bit 5 "
                       f"clear): with {count} > 7 VFs, the VFs land on other device numbers or buses, which the port "
                       "may not route", f"enable ARI in the BIOS if it offers it, or use at most 7 VFs on PF {dev.pci}",
                       dev.pci, want.block)


def check_device(dev: PciFunction, want: PfWant) -> List[CheckResult]:
    if not dev.exists:
        return [CheckResult("pf_selected", FAIL, f"no PCI device {dev.pci} on this host", None, dev.pci, want.block)]
    results = []
    if want.problem:
        results.append(CheckResult("pf_selected", FAIL, want.problem, None, dev.pci, want.block))
    elif want.block is not None:
        limit = f" (sriov_totalvfs {dev.total_vfs})" if dev.total_vfs is not None else ""
        results.append(CheckResult("pf_selected", OK, f"{want.block} selects PF {want.label or dev.pci}: "
                                                        f"num_vfs {want.num_vfs}{limit}", None, dev.pci, want.block))
    for r in (check_pf_driver(dev, want), check_sriov_capability(dev, want), check_ari(dev, want)):
        if r is not None:
            results.append(r)
    return results


_PF_CHECKS = ("pf_driver", "sriov_capability", "ari")


def _why_no_vfs(dev: PciFunction) -> str:
    """In a few words, what stops this function making VFs (its lines above say it in full)."""
    why = []
    config = dev.config or b""
    if pcicfg.STANDARD_SIZE <= len(config) < pcicfg.FULL_SIZE:
        why.append("no extended configuration space")
    cap = pcicfg.sriov_cap(config) if len(config) >= pcicfg.FULL_SIZE else None
    if len(config) >= pcicfg.FULL_SIZE and cap is None:
        why.append("no SR-IOV capability")
    elif cap is not None and cap.total_vfs == 0:
        why.append("TotalVFs 0")
    elif cap is not None and not cap.bars_assigned:
        why.append("VF BARs unassigned")
    elif cap is not None and dev.total_vfs is None:
        why.append("the kernel did not set SR-IOV up")
    if dev.total_vfs is not None or (cap is not None and cap.total_vfs):
        if dev.driver is None:
            why.append("no driver bound")
        elif dev.driver == "vfio-pci" and not dev.vfio_enable_sriov:
            why.append("vfio-pci without enable_sriov=1")
        elif dev.driver != "vfio-pci" and makes_vfs(dev.driver) is False:
            why.append(f"bound to {dev.driver}")
    return ", ".join(why) or "see above"


def check_vf_capable(state: PlatformState, wants: Sequence[PfWant], results: Sequence[CheckResult],
                     severity: str = FAIL) -> CheckResult:
    """Without a VF count asked of them: which of these functions can make VFs, which cannot, which
    cannot be told (the per-function lines above say why and the fix)."""
    can: List[str] = []
    cannot: List[str] = []
    unknown: List[str] = []
    for want in wants:
        dev = state.device(want.pci)
        who = want.label or want.pci
        mine = [r for r in results if r.subject == want.pci and r.id in _PF_CHECKS]
        if dev is None or not dev.exists:
            continue
        blocking = [r for r in mine if r.status == FAIL or (r.id == "sriov_capability" and r.status == WARN)]
        if blocking:
            cannot.append(f"{who}: {_why_no_vfs(dev)}")
        elif any(r.status == SKIP or (r.id == "pf_driver" and r.status == WARN) for r in mine) \
                or not any(r.id == "sriov_capability" for r in mine):
            unknown.append(who)
        else:
            total = _total_vfs(dev)
            limited = any(r.id == "ari" and r.status == WARN for r in mine)
            can.append(f"{who} up to {total}" + (" (7 without ARI forwarding)" if limited else ""))
    parts = []
    if can:
        parts.append("can make VFs: " + ", ".join(can))
    if cannot:
        parts.append("cannot: " + "; ".join(cannot))
    if unknown:
        parts.append("cannot tell: " + ", ".join(unknown))
    if not wants:
        return CheckResult("vf_capable", severity, "no network function (PCI class 0x02) and no function with an SR-IOV capability on this "
                           "host: nothing here can make VFs", "install an SR-IOV capable NIC")
    if can:
        return CheckResult("vf_capable", OK, "; ".join(parts))
    if unknown:
        return CheckResult("vf_capable", WARN, "; ".join(parts), "see each function's line above")
    return CheckResult("vf_capable", severity, "no function here can make VFs: " + "; ".join(parts),
                       "the fix on each function's line above (SR-IOV in the BIOS/UEFI setup and the NIC's firmware, "
                       "VF BARs, the PF driver)")


# ---------------------------------------------------------------------------- modules, NetworkManager


def check_modules(state: PlatformState, drivers: Sequence[str]) -> List[CheckResult]:
    mods = state.modules
    results = []
    for m in (mods.drivers if mods else ()):
        if m.driver not in drivers:
            continue
        if m.loaded:
            results.append(CheckResult("module", OK, f"{m.driver} is loaded", subject=m.driver))
        elif m.builtin:
            results.append(CheckResult("module", OK, f"{m.driver} is built into the kernel ({m.builtin})",
                                       subject=m.driver))
        elif m.path:
            results.append(CheckResult("module", OK, f"{m.driver} is not loaded; modprobe {m.module} finds {m.path} "
                                                     "(apply loads it)", subject=m.driver))
        elif mods and mods.problem:
            results.append(CheckResult("module", SKIP, f"{m.driver} is not loaded, and whether it can be: "
                                                       f"{mods.problem}", subject=m.driver))
        else:
            release = mods.release if mods else "?"
            results.append(CheckResult(
                "module", FAIL, f"{m.driver} is not loaded and kernel {release} has no module {m.module} "
                                f"(not in {mods.directory}/modules.dep nor modules.builtin)",
                f"install the package with {m.module} for kernel {release} (Ubuntu: linux-modules-extra-{release}; "
                "RHEL: kernel-modules-extra), or fix the driver name in the config", subject=m.driver))
    return results


def check_networkmanager(state: PlatformState, netdev_vfs: bool) -> CheckResult:
    nm = state.networkmanager
    if nm is None or nm.running is None:
        return CheckResult("networkmanager", SKIP, "/proc cannot be listed: whether NetworkManager runs is unknown")
    if not nm.running:
        return CheckResult("networkmanager", OK, "NetworkManager is not running")
    if not netdev_vfs:
        return CheckResult("networkmanager", OK, f"NetworkManager runs (pid {nm.pid}); no VF gets a network driver")
    if nm.unmanaged:
        where = "; ".join(f"{path}: {line}" for path, line in nm.unmanaged)
        return CheckResult("networkmanager", OK, f"NetworkManager runs (pid {nm.pid}) and is told to leave devices "
                                                 f"alone: {where}")
    return CheckResult("networkmanager", WARN,
                       f"NetworkManager runs (pid {nm.pid}) and nothing tells it to leave VFs alone (no udev rule "
                       "setting NM_UNMANAGED=1 for VFs, no unmanaged-devices in its configuration): it will "
                       "configure (DHCP) every new VF netdev",
                       "install sriov-node's udev rule: sriov-node udev-rule > "
                       "/etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules (scripts/install puts it there), "
                       "then udevadm control --reload")


# ---------------------------------------------------------------------------- all of them


def diagnose(state: PlatformState, scope: Scope) -> Report:
    report = Report()
    report.add(check_cpu(state))
    report.add(check_iommu(state, scope.vfio))
    report.add(check_passthrough(state, scope.vfio))
    report.add(check_kernel_args(state, scope.vfio))
    report.add(check_bootloader(state, scope.vfio))
    for subject, message in scope.unmatched:
        report.add(CheckResult("pf_selected", FAIL, message, None, None, subject))
    for note in scope.notes:
        report.add(note)
    examined = set()
    for want in scope.pfs:
        dev = state.device(want.pci)
        if dev is not None:
            for r in check_device(dev, want):
                if r.id == "pf_selected" or want.pci not in examined:  # two blocks on one PF: its checks once
                    report.add(r)
            examined.add(want.pci)
    survey = [w for w in scope.pfs if w.survey]
    if survey or scope.survey:
        report.add(check_vf_capable(state, survey, report.results, scope.survey_severity or FAIL))
    for r in check_modules(state, scope.drivers):
        report.add(r)
    report.add(check_networkmanager(state, scope.netdev_vfs))
    return report
