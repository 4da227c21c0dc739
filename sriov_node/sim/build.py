"""`sriov-node sim create`: lay out a sysfs-shaped tree for a chosen set of NICs."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node.sim.kernel import LOG, MARKER, SimKernel
from sriov_node.sim.nics import NICS, VF_DRIVER_IDS
from sriov_node.sim.platform import SimPlatform, build_platform

NicRequest = Tuple[str, int, Optional[int]]  # (model key, number of PFs, TotalVFs override)

MGMT_PCI = "0000:02:00.0"  # a non-SR-IOV management NIC (Intel I210, eno1) every host has


def parse_nic(text: str) -> NicRequest:
    """'x710', 'x710:2' or 'e810:4:256' -> (model, pfs, total_vfs)."""
    parts = text.split(":")
    if parts[0] not in NICS or len(parts) > 3:
        raise ValueError(f"unknown NIC {text!r}; models: {', '.join(sorted(NICS))} (as MODEL[:PFS[:TOTALVFS]])")
    try:
        pfs = int(parts[1]) if len(parts) > 1 else NICS[parts[0]].ports
        total = int(parts[2]) if len(parts) > 2 else None
    except ValueError:
        raise ValueError(f"{text!r}: PFS and TOTALVFS must be integers")
    nic = NICS[parts[0]]
    most = 8 if nic.stride == 1 else nic.stride  # interleaved (non-ARI) VFs fit `stride` PFs
    if not 1 <= pfs <= most or (total is not None and not 1 <= total <= 1024):
        raise ValueError(f"{text!r}: PFS must be 1-{most} for {parts[0]} and TOTALVFS 1-1024")
    return parts[0], pfs, total


def python_project_above(path: str) -> Optional[str]:
    """The nearest directory above `path` holding pyproject.toml or setup.py, if any."""
    here = os.path.dirname(os.path.abspath(path))
    while True:
        if any(os.path.isfile(os.path.join(here, name)) for name in ("pyproject.toml", "setup.py")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def create_host(
    root: str,
    nics: Sequence[NicRequest] = (("x710", 2, None),),
    *,
    iommu: bool = True,
    bios_sriov: bool = True,
    mmio: bool = True,
    vfio_loaded: bool = False,
    platform: Optional[SimPlatform] = None,
    replace: bool = True,
) -> str:
    """Build a simulated host under `root` (replacing an earlier simulated one unless `replace`
    is false) and return it.

    `platform`: its CPU, kernel command line, firmware IOMMU, boot loader, ARI, NetworkManager
    and modules (sriov_node/sim/platform.py); the defaults match `iommu`."""
    platform = platform or SimPlatform()
    platform.check(iommu)
    root = os.path.abspath(root)
    project = python_project_above(root)
    if project is not None:
        raise ValueError(
            f"{root} is inside the Python project {project}: pip and setuptools walk every directory "
            "there, and a simulated host is full of symlink cycles (an install would never end); "
            "choose a directory outside it, e.g. under /tmp or ~/.cache")
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"{root} exists and is not a directory")
    if os.path.exists(root) and os.listdir(root):
        if not os.path.isfile(os.path.join(root, MARKER)):
            raise ValueError(f"{root} exists and is not a simulated host; choose an empty or new directory")
        if not replace:
            raise ValueError(f"{root} is already a simulated host (its config, state and VFs would be lost); "
                             "pass --force to build it anew")
        shutil.rmtree(root)
    if len(nics) > 14:
        raise ValueError("at most 14 NICs per simulated host")
    os.makedirs(root)

    drivers: Dict[str, Dict[str, Any]] = {
        "igb": {"ids": ["8086:1533"], "netdev": True, "sriov_configure": True},
        "vfio-pci": {"ids": [], "vfio": True},
    }
    devices: Dict[str, Dict[str, Any]] = {}
    layout: List[Tuple[str, str, str, str]] = []  # (bdf, parent dir, vendor, device)
    for k, (key, pfs, total_override) in enumerate(nics):
        nic = NICS[key]
        total = total_override or nic.cap_total_vfs
        pf_drv = drivers.setdefault(nic.pf_driver, {"ids": [], "netdev": nic.netdev})
        pf_drv["sriov_configure"] = True
        pf_drv["ids"] = sorted(set(pf_drv["ids"]) | {f"{nic.vendor}:{nic.device}"})
        vf_drv = drivers.setdefault(nic.vf_driver, {"ids": [], "netdev": nic.netdev})
        vf_drv["ids"] = sorted(set(vf_drv["ids"]) | set(VF_DRIVER_IDS[nic.vf_driver]))
        bus = 0x10 + 0x10 * (k + 1)
        port = f"0000:00:{k + 3:02x}.0"
        parent = f"sys/devices/pci0000:00/{port}"
        layout.append((port, "sys/devices/pci0000:00", "8086", "2030"))
        for f in range(pfs):
            bdf = f"0000:{bus:02x}:00.{f}"
            layout.append((bdf, parent, nic.vendor, nic.device))
            limit = nic.driver_limit if total_override is None else None
            devices[bdf] = {
                "model": key,
                "ifname": f"{'ibs' if nic.link_type == 'infiniband' else 'ens'}{k + 1}f{f}",
                # udev's alternative name from the path (ID_NET_NAME_PATH), as systemd's default
                # AlternativeNamesPolicy gives it beside the slot name
                "altnames": [f"{'ibp' if nic.link_type == 'infiniband' else 'enp'}{bus}s0f{f}"],
                "mac": f"{nic.oui}:{k:02x}:{bus:02x}:{f:02x}",
                "vendor": nic.vendor,
                "vf_device": nic.vf_device,
                "class": nic.pci_class,
                "subsystem": nic.subsystem,
                "cap_total_vfs": total if bios_sriov else 0,
                "driver_limit": limit if bios_sriov else None,
                "offset": nic.offset(f, total, pfs),
                "stride": nic.stride,
                "subordinate": bus + 0x0F,
                "mmio": mmio,
            }
    layout.insert(0, ("0000:00:1c.0", "sys/devices/pci0000:00", "8086", "a338"))
    layout.insert(1, (MGMT_PCI, "sys/devices/pci0000:00/0000:00:1c.0", "8086", "1533"))
    devices[MGMT_PCI] = {"ifname": "eno1", "mac": "a0:36:9f:ff:00:01"}

    for name in platform.missing_modules:  # no module for this kernel: not loaded, modprobe fails
        drivers.pop(name, None)
    model = {
        "format": 1,
        "iommu": iommu,
        "next_group": 1,
        "hold_block_seconds": 30,
        "drivers": drivers,
        "devices": devices,
        "faults": [],
    }
    with open(os.path.join(root, MARKER), "w") as fh:
        json.dump(model, fh, indent=1, sort_keys=True)
    open(os.path.join(root, LOG), "w").close()

    sim = SimKernel(root)
    sim._load()
    for bdf, parent, vendor, device in layout:
        _add_function(sim, bdf, parent, vendor, device, devices.get(bdf), iommu)
    for sub in ("sys/kernel/iommu_groups", "sys/class/iommu", "sys/class/net", "dev", "proc", "run"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    sim._put("sys/bus/pci/drivers_probe", "", 0o200)
    sim._put("sys/bus/pci/drivers_autoprobe", "1\n")
    build_platform(root, platform, iommu=iommu, mmio=mmio, bios_sriov=bios_sriov, layout=layout, devices=devices,
                   drivers=sorted(drivers))
    if iommu:
        sim._save()
    for drv in sorted(drivers):
        if drv != "vfio-pci" or vfio_loaded:
            sim.register_driver(drv)
    sim._save()  # what the drivers' probes counted (the next ifindex)
    from sriov_node.sim.mlxconfig import install

    install(root)  # mlx5 firmware settings and the host's mstconfig
    from sriov_node.sim.rdma import install as install_rdma

    install_rdma(root)  # the boot id, iproute2's rdma, ib_core where an mlx5 NIC is
    return root


def _subsystem(vendor: str, hw: Optional[Dict[str, Any]]) -> Tuple[str, str]:
    """The function's subsystem vendor and device: its NIC model's, else the vendor's with device 0000."""
    sub = (hw or {}).get("subsystem")
    return (sub.split(":")[0], sub.split(":")[1]) if sub else (vendor, "0000")


def _add_function(sim: SimKernel, bdf: str, parent: str, vendor: str, device: str,
                  hw: Optional[Dict[str, Any]], iommu: bool) -> None:
    d = f"{parent}/{bdf}"
    bridge = device in ("2030", "a338")
    for name, value in (("vendor", f"0x{vendor}"), ("device", f"0x{device}"),
                        ("class", "0x060400" if bridge else f"0x{(hw or {}).get('class', '020000')}"),
                        ("numa_node", "0"),
                        ("subsystem_vendor", f"0x{_subsystem(vendor, hw)[0]}"),
                        ("subsystem_device", f"0x{_subsystem(vendor, hw)[1]}")):
        sim._put(f"{d}/{name}", value + "\n", 0o444)
    sim._put(f"{d}/driver_override", "(null)\n")
    sim._link(f"sys/bus/pci/devices/{bdf}", d)
    if hw and hw.get("cap_total_vfs"):
        for name, value in (("sriov_totalvfs", hw["cap_total_vfs"]), ("sriov_offset", hw["offset"]),
                            ("sriov_stride", hw["stride"]), ("sriov_vf_device", hw["vf_device"]),
                            ("sriov_vf_total_msix", 0)):
            sim._put(f"{d}/{name}", f"{value}\n", 0o444)
        sim._put(f"{d}/sriov_numvfs", "0\n")
        sim._put(f"{d}/sriov_drivers_autoprobe", "1\n")
    if iommu and not bridge:
        group = str(sim._model["next_group"])
        sim._model["next_group"] += 1
        sim._put(f"sys/kernel/iommu_groups/{group}/type", "identity\n", 0o444)
        sim._link(f"sys/kernel/iommu_groups/{group}/devices/{bdf}", d)
        sim._link(f"{d}/iommu_group", f"sys/kernel/iommu_groups/{group}")
