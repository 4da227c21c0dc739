"""What a simulated host shows of its platform: CPU, kernel command line and release, ACPI IOMMU
tables, PCI configuration space, modules, the boot loader's files, NetworkManager.

Configuration space follows the PCI layout (docs/kernel-sriov-spec.md §4.2): a type 0 or type 1
header, a PCI Express capability (version 2, with ARI forwarding in DevCap2 on ports), and the
extended list from 0x100 (AER, ARI, SR-IOV with TotalVFs, offset, stride, VF device and VF BARs).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

CPUS = {
    "intel": ("GenuineIntel", "6", "106", "Intel(R) Xeon(R) Gold 6338N CPU @ 2.20GHz", "vmx"),
    "amd": ("AuthenticAMD", "25", "1", "AMD EPYC 7543 32-Core Processor", "svm"),
}
BOOTLOADERS = ("debian", "rhel", "none")
RELEASES = {"debian": "6.1.0-18-amd64", "rhel": "5.14.0-362.8.1.el9_3.x86_64", "none": "6.1.0-18-amd64"}
MACHINE_ID = "4c1d3f8e2b7a4f0c9e5d6a7b8c9d0e1f"
RHEL_ARGS = "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap"
NM_PID = 812
MODULE_DIRS = {
    "i40e": "drivers/net/ethernet/intel/i40e", "ice": "drivers/net/ethernet/intel/ice",
    "iavf": "drivers/net/ethernet/intel/iavf", "igb": "drivers/net/ethernet/intel/igb",
    "igbvf": "drivers/net/ethernet/intel/igbvf", "ixgbe": "drivers/net/ethernet/intel/ixgbe",
    "ixgbevf": "drivers/net/ethernet/intel/ixgbevf", "mlx5_core": "drivers/net/ethernet/mellanox/mlx5/core",
    "vfio-pci": "drivers/vfio/pci",
    "uio_pci_generic": "drivers/uio",
}


@dataclass(frozen=True)
class SimPlatform:
    cpu: str = "intel"  # intel | amd
    bios_iommu: bool = True  # the firmware's DMAR (Intel) or IVRS (AMD) ACPI table
    cmdline: Optional[str] = None  # the running kernel's IOMMU arguments (default: from --iommu)
    bootloader: str = "debian"  # debian (/etc/default/grub) | rhel (BLS entries, grubenv) | none
    boot_args: Optional[str] = None  # the IOMMU arguments the boot loader gives the next boot
    ari: bool = True  # the ports above the NICs support ARI forwarding
    networkmanager: bool = False
    missing_modules: Tuple[str, ...] = field(default_factory=tuple)

    def running_args(self, iommu: bool) -> str:
        if self.cmdline is not None:
            return self.cmdline.strip()
        if iommu:
            return "intel_iommu=on iommu=pt" if self.cpu == "intel" else "iommu=pt"
        return "amd_iommu=off" if self.cpu == "amd" and self.bios_iommu else ""

    def check(self, iommu: bool) -> None:
        """Refuse a platform whose parts contradict each other (ValueError)."""
        if self.cpu not in CPUS:
            raise ValueError(f"--cpu takes {' or '.join(CPUS)}, not {self.cpu!r}")
        if self.bootloader not in BOOTLOADERS:
            raise ValueError(f"--bootloader takes {', '.join(BOOTLOADERS)}, not {self.bootloader!r}")
        if iommu and not self.bios_iommu:
            raise ValueError("--iommu on needs the firmware's IOMMU: --bios-iommu off goes with --iommu off")
        words = self.running_args(iommu).split()
        off = [w for w in words if w in ("iommu=off", "amd_iommu=off" if self.cpu == "amd" else "intel_iommu=off")]
        if iommu and off:
            raise ValueError(f"--iommu on with {' '.join(off)} on the command line: that kernel has no IOMMU")
        intel_on = "intel_iommu=on" in words and not off
        if not iommu and self.bios_iommu and (intel_on if self.cpu == "intel" else not off):
            raise ValueError("--iommu off with the firmware's IOMMU present needs a command line that leaves it "
                             "off (--cmdline without intel_iommu=on on Intel; with amd_iommu=off on AMD)")


def _write(root: str, rel: str, data: Any, mode: int = 0o644) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


# ---------------------------------------------------------------------------- configuration space


def _put16(b: bytearray, off: int, v: int) -> None:
    struct.pack_into("<H", b, off, v)


def _put32(b: bytearray, off: int, v: int) -> None:
    struct.pack_into("<I", b, off, v)


def _header(vendor: str, device: str, class_code: int, bridge: bool, bar0: int) -> bytearray:
    b = bytearray(4096)
    _put16(b, 0x00, int(vendor, 16))
    _put16(b, 0x02, int(device, 16))
    _put16(b, 0x04, 0x0406)  # Memory Space, Bus Master, SERR#
    _put16(b, 0x06, 0x0010)  # Capabilities List
    _put32(b, 0x08, class_code << 8 | 0x01)
    b[0x0E] = 0x01 if bridge else 0x00
    _put32(b, 0x10, bar0)
    b[0x34] = 0x40
    # 0x40: Power Management -> 0x70: PCI Express (v2)
    b[0x40], b[0x41] = 0x01, 0x70
    _put16(b, 0x42, 0x0003)
    return b


def _pcie(b: bytearray, port_type: int, ari_forwarding: bool) -> None:
    b[0x70], b[0x71] = 0x10, 0x00
    _put16(b, 0x72, 0x0002 | port_type << 4)
    _put32(b, 0x70 + 0x24, (1 << 5) if ari_forwarding else 0)  # DevCap2: ARI Forwarding Supported
    _put16(b, 0x70 + 0x28, (1 << 5) if ari_forwarding else 0)  # DevCtl2: ARI Forwarding Enable


def _ext(b: bytearray, offset: int, cap_id: int, version: int, nxt: int) -> None:
    _put32(b, offset, cap_id | version << 16 | nxt << 20)


def bridge_config(vendor: str, device: str, ari: bool) -> bytes:
    b = _header(vendor, device, 0x060400, True, 0)
    _pcie(b, 4, ari)  # root port
    _ext(b, 0x100, 0x0001, 2, 0)  # AER, last
    return bytes(b)


def endpoint_config(vendor: str, device: str, *, sriov: Optional[Dict[str, Any]] = None, ari_cap: bool = False,
                    sriov_offset: int = 0x160, bar0: int = 0xFB000000, pci_class: int = 0x020000) -> bytes:
    """A function (Ethernet unless `pci_class` says otherwise: 0x010802 NVMe, 0x120000 an accelerator);
    `sriov`: total, initial, offset, stride, vf_device, vf_bar (0: unassigned)."""
    b = _header(vendor, device, pci_class, False, bar0 | 0x0C)
    _pcie(b, 0, False)
    chain = [(0x100, 0x0001, 2)]  # AER
    if ari_cap:
        chain.append((0x150, 0x000E, 1))
    if sriov is not None:
        chain.append((sriov_offset, 0x0010, 1))
    for i, (off, cid, ver) in enumerate(chain):
        _ext(b, off, cid, ver, chain[i + 1][0] if i + 1 < len(chain) else 0)
    if sriov is not None:
        s = sriov_offset
        _put32(b, s + 0x04, 0)  # SR-IOV Capabilities
        _put16(b, s + 0x08, 0x0010 if ari_cap else 0)  # Control: ARI Capable Hierarchy
        _put16(b, s + 0x0C, sriov["total"])  # InitialVFs
        _put16(b, s + 0x0E, sriov["total"])  # TotalVFs
        _put16(b, s + 0x14, sriov["offset"])
        _put16(b, s + 0x16, sriov["stride"])
        _put16(b, s + 0x1A, int(sriov["vf_device"], 16))
        _put32(b, s + 0x1C, 0x00000553)  # Supported Page Sizes
        _put32(b, s + 0x20, 0x00000001)  # System Page Size: 4K
        bar = sriov["vf_bar"]
        _put32(b, s + 0x24, (bar & 0xFFFFFFF0) | 0x0C)  # VF BAR0: 64-bit prefetchable
        _put32(b, s + 0x28, bar >> 32)
        _put32(b, s + 0x30, ((bar + 0x100000) & 0xFFFFFFF0 if bar else 0) | 0x0C)  # VF BAR3: 64-bit prefetchable
        _put32(b, s + 0x34, (bar + 0x100000) >> 32 if bar else 0)
    return bytes(b)


# ---------------------------------------------------------------------------- files


def _cpuinfo(cpu: str) -> str:
    vendor, family, model, name, flag = CPUS[cpu]
    return "".join(
        f"processor\t: {n}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        f"model name\t: {name}\nstepping\t: 6\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep {flag} "
        "sse sse2 ht syscall nx lm\n\n" for n in range(2))


def _grub_defaults(args: str) -> str:
    return ("# If you change this file, run 'update-grub' afterwards to update\n# /boot/grub/grub.cfg.\n\n"
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
            f'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="{args}"\n\n#GRUB_GFXMODE=640x480\n')


def _rhel_files(root: str, args: str) -> None:
    release = RELEASES["rhel"]
    options = f"root=/dev/mapper/rhel-root ro {RHEL_ARGS} {args}".strip()
    _write(root, "etc/default/grub",
           "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\n"
           "GRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\n"
           f'GRUB_CMDLINE_LINUX="{RHEL_ARGS} {args}"\nGRUB_DISABLE_RECOVERY="true"\nGRUB_ENABLE_BLSCFG=true\n'
           .replace(' "\n', '"\n'))
    entries = "boot/loader/entries"
    _write(root, f"{entries}/{MACHINE_ID}-{release}.conf",
           f"title Red Hat Enterprise Linux ({release}) 9.3 (Plow)\nversion {release}\nlinux /vmlinuz-{release}\n"
           f"initrd /initramfs-{release}.img $tuned_initrd\noptions {options} $tuned_params\n"
           "grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n")
    _write(root, f"{entries}/{MACHINE_ID}-0-rescue.conf",
           f"title Red Hat Enterprise Linux (0-rescue-{MACHINE_ID}) 9.3 (Plow)\nversion 0-rescue-{MACHINE_ID}\n"
           f"linux /vmlinuz-0-rescue-{MACHINE_ID}\ninitrd /initramfs-0-rescue-{MACHINE_ID}.img\n"
           f"options root=/dev/mapper/rhel-root ro {RHEL_ARGS}\ngrub_users $grub_users\ngrub_arg --unrestricted\n"
           "grub_class rhel\n")
    env = f"# GRUB Environment Block\nsaved_entry={MACHINE_ID}-{release}\nboot_success=0\n"
    _write(root, "boot/grub2/grubenv", env + "#" * (1024 - len(env)))
    _write(root, "etc/kernel/cmdline", options + "\n")


def _modules(root: str, release: str, drivers: Sequence[str], compressed: bool) -> None:
    suffix = ".ko.xz" if compressed else ".ko"
    lines = []
    for drv in sorted(set(drivers) | {"uio_pci_generic"}):  # every distribution kernel ships it
        directory = MODULE_DIRS.get(drv, "drivers/misc")
        if drv == "vfio-pci":
            core = f"kernel/drivers/vfio/pci/vfio-pci-core{suffix}"
            lines.append(f"kernel/{directory}/{drv}{suffix}: {core} kernel/drivers/vfio/vfio{suffix}")
            lines.append(f"{core}: kernel/drivers/vfio/vfio{suffix}")
        else:
            lines.append(f"kernel/{directory}/{drv}{suffix}:")
    lines.append(f"kernel/drivers/vfio/vfio{suffix}:")
    base = f"lib/modules/{release}"
    _write(root, f"{base}/modules.dep", "\n".join(lines) + "\n")
    _write(root, f"{base}/modules.builtin", "kernel/drivers/pci/pcie/portdrv.ko\nkernel/drivers/iommu/intel/iommu.ko\n")


def build_platform(root: str, spec: SimPlatform, *, iommu: bool, mmio: bool, bios_sriov: bool,
                   layout: Sequence[Tuple[str, str, str, str]], devices: Dict[str, Dict[str, Any]],
                   drivers: Sequence[str]) -> None:
    """Write the platform files of a simulated host whose PCI tree (layout, devices) exists."""
    spec.check(iommu)
    args = spec.running_args(iommu)
    boot_args = spec.boot_args.strip() if spec.boot_args is not None else args
    release = RELEASES[spec.bootloader]
    _write(root, "proc/cpuinfo", _cpuinfo(spec.cpu), 0o444)
    _write(root, "proc/sys/kernel/osrelease", release + "\n", 0o444)
    if spec.bootloader == "rhel":
        cmdline = f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{release} root=/dev/mapper/rhel-root ro {RHEL_ARGS} {args}"
    else:
        cmdline = f"BOOT_IMAGE=/boot/vmlinuz-{release} root=UUID=0c1a6b42-7f3e-4c55-9d1a-3b5e2f7c8a90 ro {args} quiet"
    _write(root, "proc/cmdline", " ".join(cmdline.split()) + "\n", 0o444)
    tables = ["APIC", "DSDT", "FACP", "FACS", "MCFG"]
    if spec.bios_iommu:
        tables.append("DMAR" if spec.cpu == "intel" else "IVRS")
    for table in tables:
        _write(root, f"sys/firmware/acpi/tables/{table}", table.encode() + bytes(32), 0o400)
    unit = "dmar0" if spec.cpu == "intel" else "ivhd0"
    if iommu:
        os.makedirs(os.path.join(root, "sys/class/iommu", unit), exist_ok=True)
        if "iommu=pt" not in args.split():
            groups = os.path.join(root, "sys/kernel/iommu_groups")
            for group in os.listdir(groups):
                _write(root, f"sys/kernel/iommu_groups/{group}/type", "DMA-FQ\n", 0o444)
    for bdf, parent, vendor, device in layout:
        hw = devices.get(bdf) or {}
        d = f"{parent}/{bdf}"
        if device in ("2030", "a338"):
            config = bridge_config(vendor, device, spec.ari)
        elif hw.get("model"):
            total = hw["cap_total_vfs"]
            vf_bar = (0x38000000000 + int(bdf[5:7], 16) * 0x10000000 + int(bdf[-1]) * 0x1000000) if mmio else 0
            ari_cap = hw["stride"] == 1
            sriov = {"total": total, "offset": hw["offset"], "stride": hw["stride"], "vf_device": hw["vf_device"],
                     "vf_bar": vf_bar} if bios_sriov else None
            config = endpoint_config(vendor, device, sriov=sriov, ari_cap=ari_cap,
                                     sriov_offset=0x180 if hw["model"] == "cx5" else 0x160,
                                     pci_class=int(hw.get("class", "020000"), 16))
            _write(root, f"{d}/ari_enabled", "1\n" if spec.ari and ari_cap else "0\n", 0o444)
        else:
            config = endpoint_config(vendor, device)
            _write(root, f"{d}/ari_enabled", "0\n", 0o444)
        _write(root, f"{d}/config", config, 0o644)
    _modules(root, release, [d for d in drivers if d not in spec.missing_modules], spec.bootloader == "rhel")
    if spec.bootloader == "debian":
        _write(root, "etc/default/grub", _grub_defaults(boot_args))
        _write(root, "etc/debian_version", "12.5\n")  # Debian's grub-mkconfig sources /etc/default/grub.d
    elif spec.bootloader == "rhel":
        _rhel_files(root, boot_args)
    if spec.networkmanager:
        _write(root, f"proc/{NM_PID}/comm", "NetworkManager\n", 0o444)
        _write(root, "run/NetworkManager/NetworkManager.pid", f"{NM_PID}\n")
        _write(root, "etc/NetworkManager/NetworkManager.conf", "[main]\nplugins=ifupdown,keyfile\n\n"
                                                              "[ifupdown]\nmanaged=false\n")
