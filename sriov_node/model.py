"""Typed values: the desired state (from config.toml) and the observed state (from the kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

# ---------------------------------------------------------------------------- desired


@dataclass(frozen=True)
class VfGroup:
    """A set of VF indices of one PF that share settings."""

    key: str  # "pf[0].vfs[1]"
    range_text: str
    indices: Tuple[int, ...]
    driver: Optional[str] = None  # None: leave the VF to the kernel's default driver


@dataclass(frozen=True)
class PfSelector:
    """Which PF(s) a [[pf]] block is about: exactly one of name | pci | mac | vendor+device."""

    name: Optional[str] = None
    pci: Optional[str] = None
    mac: Optional[str] = None
    vendor: Optional[str] = None
    device: Optional[str] = None
    index: Optional[int] = None

    def describe(self) -> str:
        if self.name is not None:
            return f"name={self.name}"
        if self.pci is not None:
            return f"pci={self.pci}"
        if self.mac is not None:
            return f"mac={self.mac}"
        text = f"vendor:device={self.vendor}:{self.device}"
        if self.index is not None:
            text += f" index={self.index}"
        return text


@dataclass(frozen=True)
class PfSpec:
    """One [[pf]] block."""

    key: str  # "pf[0]"
    selector: PfSelector
    num_vfs: int
    vfs: Tuple[VfGroup, ...] = ()

    def explicit_drivers(self) -> Dict[int, str]:
        """VF index -> driver, for the VFs whose driver the config names."""
        return {i: g.driver for g in self.vfs if g.driver for i in g.indices}


@dataclass(frozen=True)
class DesiredState:
    source: str
    digest: str  # sha256 of the file's bytes, recorded in the state file
    version: int
    pfs: Tuple[PfSpec, ...]


# ---------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class VfState:
    index: int
    pci: str
    driver: Optional[str]
    driver_override: Optional[str]
    netdevs: Tuple[str, ...] = ()
    # The VF's net/ directory exists but shows no netdev from this namespace:
    # its netdev was moved into another network namespace (a pod).
    netdev_elsewhere: bool = False
    iommu_group: Optional[str] = None


@dataclass(frozen=True)
class PfState:
    pci: str
    vendor: Optional[str]  # "8086", lower-case, no 0x
    device: Optional[str]
    driver: Optional[str]
    netdevs: Tuple[str, ...]
    mac: Optional[str]  # permanent MAC where the kernel says the address is permanent
    total_vfs: Optional[int]
    num_vfs: Optional[int]
    autoprobe: Optional[bool]
    vf_device: Optional[str]
    vfs: Tuple[VfState, ...] = ()

    @property
    def name(self) -> Optional[str]:
        return self.netdevs[0] if self.netdevs else None

    def vf(self, index: int) -> Optional[VfState]:
        for vf in self.vfs:
            if vf.index == index:
                return vf
        return None


@dataclass(frozen=True)
class HostState:
    pfs: Tuple[PfState, ...]
    pci_drivers: FrozenSet[str] = field(default_factory=frozenset)
    iommu_groups: bool = False  # /sys/kernel/iommu_groups has entries
    pci_devices: FrozenSet[str] = field(default_factory=frozenset)  # every PCI function, PF or not
    netdev_owners: Dict[str, str] = field(default_factory=dict)  # netdev name -> PCI address
