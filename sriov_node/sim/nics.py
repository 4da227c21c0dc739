"""NIC models for the simulated host, with IDs and limits as real kernels show them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class NicModel:
    key: str
    label: str
    vendor: str
    device: str
    vf_device: str
    pf_driver: str
    vf_driver: str
    cap_total_vfs: int  # TotalVFs in config space
    driver_limit: Optional[int]  # what the PF driver reduces sriov_totalvfs to, if it does
    first_offset: int
    stride: int
    ports: int
    oui: str
    pf_ids: Tuple[str, ...] = ()  # other PF device IDs the PF driver binds
    pci_class: str = "020000"  # the `class` file (PF and VFs): base class, subclass, prog-if
    netdev: bool = True  # whether the driver makes a network interface (not for storage or accelerators)
    speed: int = 10000  # the PF netdev's link speed (Mbit/s): `speed` reads it, the link is up
    link_type: str = "ether"  # the netdevs' link layer: "ether" (ARPHRD_ETHER, type 1) or "infiniband" (IPoIB, 32)
    # the subsystem vendor:device the PF and its VFs show (None: the PF shows the vendor's with device 0000,
    # the VFs show none)
    subsystem: Optional[str] = None

    def offset(self, function: int, total: int, pfs: int) -> int:
        """First VF Offset for PF `function`: ARI parts pack each PF's VFs after the last PF."""
        if self.stride == 1:
            return max(self.first_offset, pfs) + function * total - function
        return self.first_offset  # non-ARI parts interleave VFs of sibling PFs by stride


NICS: Dict[str, NicModel] = {
    m.key: m
    for m in (
        NicModel("x710", "Intel X710 SFP+", "8086", "1572", "154c", "i40e", "iavf", 64, None, 16, 1, 2, "3c:fd:fe"),
        NicModel("e810", "Intel E810-XXV SFP", "8086", "159b", "1889", "ice", "iavf", 128, None, 8, 1, 2, "b4:96:91", speed=25000),
        NicModel("cx5", "Mellanox ConnectX-5", "15b3", "1017", "1018", "mlx5_core", "mlx5_core", 16, None, 2, 1, 2, "0c:42:a1", speed=25000),
        # a ConnectX-6 port in InfiniBand mode (LINK_TYPE_P1=IB): an Infiniband controller (class 0x0207),
        # its PF and VF netdevs IPoIB (type 32, 20-byte addresses)
        NicModel("cx6-ib", "Mellanox ConnectX-6 InfiniBand", "15b3", "101b", "101c", "mlx5_core", "mlx5_core", 16, None, 1,
                 1, 1, "0c:42:a1", pci_class="020700", speed=200000, link_type="infiniband"),
        NicModel("i350", "Intel I350", "8086", "1521", "1520", "igb", "igbvf", 8, 7, 128, 4, 2, "a0:36:9f", speed=1000),
        # QEMU's igb (-device igb, QEMU >= 8.0), as the lab's Linux 6.1 shows it (tests/lab/test_igb_sim_lab.py):
        # the device advertises 8 VFs, igb caps sriov_totalvfs at 7; VFs at offset 128, stride 2 (non-ARI)
        NicModel("82576", "Intel 82576 (QEMU igb)", "8086", "10c9", "10ca", "igb", "igbvf", 8, 7, 128, 2, 2,
                 "52:54:00", speed=1000, subsystem="1af4:1100"),
        NicModel("82599", "Intel 82599ES SFP+", "8086", "10fb", "10ed", "ixgbe", "ixgbevf", 64, 63, 128, 2, 2, "90:e2:ba"),
        # not network functions: QEMU's NVMe controller (mass storage, 0x0108; the lab's), and HiSilicon's
        # ZIP engine (processing accelerator, 0x1200); one driver for the PF and its VFs, no netdev
        NicModel("nvme", "QEMU NVMe Ctrl", "1b36", "0010", "0010", "nvme", "nvme", 16, None, 1, 1, 1, "52:54:00",
                 pci_class="010802", netdev=False),
        NicModel("hisi-zip", "HiSilicon ZIP Engine", "19e5", "a250", "a251", "hisi_zip", "hisi_zip", 63, None, 1, 1, 1,
                 "00:18:2d", pci_class="120000", netdev=False),
    )
}

# VF drivers bind VF IDs; every PF driver also configures SR-IOV (has sriov_configure).
VF_DRIVER_IDS: Dict[str, Tuple[str, ...]] = {
    "iavf": ("8086:154c", "8086:1889", "8086:37cd"),
    "igbvf": ("8086:10ca", "8086:1520"),
    "ixgbevf": ("8086:10ed", "8086:1515", "8086:1565"),
    "mlx5_core": ("15b3:1018", "15b3:101c", "15b3:101e"),
    "nvme": ("1b36:0010",),
    "hisi_zip": ("19e5:a251",),
}
