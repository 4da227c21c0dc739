"""Typed values: the desired state (from config.toml) and the observed state (from the kernel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

# ---------------------------------------------------------------------------- desired

# What a VF group's `driver` key may say besides a driver name.
DRIVER_NONE = "none"  # deliberately unbound: driver_override "none", so nothing ever binds it
DRIVER_ANY = "any"  # opted out: whatever binds it stays (tools that bind VFs themselves)
DRIVER_DEFAULT = None  # `driver` omitted: the kernel's default driver, driver_override cleared

# Drivers that bind only when asked for by name (driver_override, new_id, ids=): never a default.
OVERRIDE_ONLY_DRIVERS = frozenset({"vfio-pci", "pci-stub"})


def is_override_only(driver: Optional[str]) -> bool:
    """vfio-pci, pci-stub and vfio-pci variant drivers (mlx5_vfio_pci, ...) never bind by default."""
    return driver is not None and (driver in OVERRIDE_ONLY_DRIVERS or driver.endswith("_vfio_pci"))


def is_vfio(driver: Optional[str]) -> bool:
    """vfio-pci and its variant drivers: they need the VF to be in an IOMMU group."""
    return driver is not None and (driver == "vfio-pci" or driver.endswith("_vfio_pci"))


def _sha256(data: bytes) -> Any:
    # CPython's built-in sha256: hashlib would load OpenSSL first, a few ms on every run at boot
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # 3.9 - 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,no-redef]  # 3.12+
        except ImportError:
            from hashlib import sha256  # type: ignore[no-redef]
    return sha256(data)


def format_ranges(indices: "list[int]") -> str:
    """[0, 1, 2, 5] -> '0-2,5' (the config's range syntax)."""
    spans: "list[list[int]]" = []
    for i in sorted(indices):
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def describe_driver(driver: Optional[str]) -> str:
    """How a desired VF driver reads in messages."""
    if driver is DRIVER_DEFAULT:
        return "the kernel's default driver"
    if driver == DRIVER_NONE:
        return "no driver (driver_override none)"
    if driver == DRIVER_ANY:
        return "any driver (not managed)"
    return driver


VLAN_PROTOS = {"802.1Q": 0x8100, "802.1ad": 0x88A8}
LINK_STATES = ("auto", "enable", "disable")  # IFLA_VF_LINK_STATE 0, 1, 2
ESWITCH_MODES = ("legacy", "switchdev")
RDMA_NETNS_MODES = ("exclusive", "shared")  # ib_core's netns_mode: 0 exclusive, 1 shared (the default)
DEFAULT_REPRESENTOR_NAME = "{pf}_{vf}"
# The VF settings the PF driver holds, listed once: (config key, the netlink attribute that carries it
# and the driver's ndo that sets it), in the order the kernel applies the attributes inside one
# IFLA_VF_INFO (do_setvfinfo). Every other list of them derives from this one.
VF_SETTINGS = (
    ("mac", "mac"),  # IFLA_VF_MAC, ndo_set_vf_mac
    ("vlan", "vlan"),  # IFLA_VF_VLAN_LIST, ndo_set_vf_vlan(vf, vlan, qos, proto)
    ("qos", "vlan"),
    ("vlan_proto", "vlan"),
    ("min_tx_rate", "rate"),  # IFLA_VF_RATE, ndo_set_vf_rate(vf, min, max)
    ("max_tx_rate", "rate"),
    ("spoofchk", "spoofchk"),  # IFLA_VF_SPOOFCHK, ndo_set_vf_spoofchk
    ("link_state", "link_state"),  # IFLA_VF_LINK_STATE, ndo_set_vf_link_state
    ("trust", "trust"),  # IFLA_VF_TRUST, ndo_set_vf_trust
)
VF_SETTING_KEYS = tuple(key for key, _ in VF_SETTINGS)  # the config's keys
# the netlink attributes (the plan's and the comparison's unit), in the kernel's order
VF_LINK_ATTRS = tuple(dict.fromkeys(attr for _, attr in VF_SETTINGS))
SETTING_ATTR = dict(VF_SETTINGS)  # config key -> its netlink attribute


def split_setting(attr: str, value: Any) -> Dict[str, Any]:
    """One netlink attribute's value by config key: ("vlan", (10, 0, "802.1Q")) -> {vlan: 10, qos: 0, vlan_proto: ...}."""
    keys = [key for key, a in VF_SETTINGS if a == attr]
    if len(keys) == 1:
        return {keys[0]: value}
    return dict(zip(keys, value))


@dataclass(frozen=True)
class VfLinks:
    """VF settings the PF's driver holds (rtnetlink IFLA_VF_*): desired (None = not managed) or observed."""

    mac: Optional[str] = None
    vlan: Optional[int] = None  # 0 = no VLAN
    qos: Optional[int] = None
    vlan_proto: Optional[str] = None  # "802.1Q" | "802.1ad"
    spoofchk: Optional[bool] = None
    trust: Optional[bool] = None
    link_state: Optional[str] = None  # "auto" | "enable" | "disable"
    min_tx_rate: Optional[int] = None  # Mbit/s, 0 = no limit
    max_tx_rate: Optional[int] = None
    # observed only (IFLA_VF_IB_NODE_GUID/PORT_GUID, reported through ndo_get_vf_guid since 5.5, else
    # MLNX_OFED's <PF>/sriov/<N>/{node,port}: PfState.vf_guids_from says which): an InfiniBand VF's
    # GUIDs, "xx:xx:xx:xx:xx:xx:xx:xx"; None where neither reports them
    node_guid: Optional[str] = None
    port_guid: Optional[str] = None

    def wanted(self) -> Dict[str, Any]:
        """The managed attributes, grouped as the kernel sets them: vlan = (vlan, qos, proto), rate = (min, max)."""
        out: Dict[str, Any] = {}
        if self.mac is not None:
            out["mac"] = self.mac
        if self.vlan is not None:
            out["vlan"] = (self.vlan, self.qos or 0, self.vlan_proto or "802.1Q")
        if self.min_tx_rate is not None or self.max_tx_rate is not None:
            out["rate"] = (self.min_tx_rate or 0, self.max_tx_rate or 0)
        for name in VF_LINK_ATTRS:
            if name not in out and name not in ("vlan", "rate") and getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {attr: out[attr] for attr in VF_LINK_ATTRS if attr in out}  # the kernel's order

    def settings(self) -> Dict[str, Any]:
        """The managed settings by config key (qos and vlan_proto with their defaults when vlan is set)."""
        out: Dict[str, Any] = {}
        for attr, value in self.wanted().items():
            out.update(split_setting(attr, value))
        return out

    def observed(self, attr: str) -> Any:
        """The observed value of one grouped attribute, in the shape `wanted` uses."""
        if attr == "vlan":
            return None if self.vlan is None else (self.vlan, self.qos or 0, self.vlan_proto or "802.1Q")
        if attr == "rate":
            return None if self.max_tx_rate is None else (self.min_tx_rate or 0, self.max_tx_rate)
        return getattr(self, attr)


@dataclass(frozen=True)
class VfGroup:
    """A set of VF indices of one PF that share settings."""

    key: str  # "pf[0].vfs[1]"
    range_text: str
    indices: Tuple[int, ...]
    driver: Optional[str] = DRIVER_DEFAULT  # a driver name, "none", "any", or None (the kernel's default)
    links: VfLinks = VfLinks()
    mtu: Optional[int] = None  # the VF netdev's MTU
    resource: Optional[str] = None  # the device plugin's resourceName for these VFs (`sriov-node export`)
    # the resource's options in the device plugin's config (one value per resource; config.py checks)
    rdma: bool = False  # selector isRdma: only VFs with an RDMA device, their /dev/infiniband nodes mounted
    vhost_net: bool = False  # selector needVhostNet: /dev/vhost-net and /dev/net/tun mounted with each VF
    exclude_topology: bool = False  # resource excludeTopology: no NUMA node reported to kubelet
    guids: Optional["GuidSpec"] = None  # InfiniBand VF GUIDs (guid = "auto", or node_guid/port_guid)


@dataclass(frozen=True)
class PfSelector:
    """Which PF(s) a [[pf]] block is about: exactly one of name | altname | pci | mac | vendor+device
    (name and altname together: one PF that has both)."""

    name: Optional[str] = None
    altname: Optional[str] = None  # an alternative interface name (IFLA_ALT_IFNAME, `ip link property add`)
    pci: Optional[str] = None
    mac: Optional[str] = None
    vendor: Optional[str] = None
    device: Optional[str] = None
    index: Optional[int] = None

    @property
    def is_fleet_rule(self) -> bool:
        return self.vendor is not None

    def describe(self) -> str:
        if self.name is not None and self.altname is not None:
            return f"name={self.name} altname={self.altname}"
        if self.name is not None:
            return f"name={self.name}"
        if self.altname is not None:
            return f"altname={self.altname}"
        if self.pci is not None:
            return f"pci={self.pci}"
        if self.mac is not None:
            return f"mac={self.mac}"
        text = f"vendor:device={self.vendor}:{self.device}"
        if self.index is not None:
            text += f" index={self.index}"
        return text


@dataclass(frozen=True)
class VfSpec:
    """What one VF should look like (derived from its group, or the defaults)."""

    index: int
    driver: Optional[str] = DRIVER_DEFAULT
    group: Optional[str] = None  # the group's key, None for VFs no group names
    links: VfLinks = VfLinks()
    mtu: Optional[int] = None
    guids: Optional["GuidSpec"] = None


@dataclass(frozen=True)
class PfSpec:
    """One [[pf]] block."""

    key: str  # "pf[0]"
    selector: PfSelector
    num_vfs: int
    vfs: Tuple[VfGroup, ...] = ()
    drivers_autoprobe: Optional[bool] = None  # None: the kernel's default (1), or untouched when externally managed
    mtu: Optional[int] = None  # the PF netdev's MTU
    eswitch_mode: Optional[str] = None  # "legacy" | "switchdev"
    externally_managed: bool = False  # another tool owns sriov_numvfs: only check it and configure the VFs
    # switchdev: the representors' names, "{pf}" the PF's netdev name, "{vf}" the VF index (sriov-node udev-rule)
    representor_name: Optional[str] = None

    def vf(self, index: int) -> VfSpec:
        for group in self.vfs:
            if index in group.indices:
                return VfSpec(index, group.driver, group.key, group.links, group.mtu, group.guids)
        return VfSpec(index)

    @property
    def wants_vf_links(self) -> bool:
        return any(g.links.wanted() for g in self.vfs)

    @property
    def wants_guids(self) -> bool:
        return any(g.guids is not None for g in self.vfs)

    @property
    def wants_plugin_facts(self) -> bool:
        """A group names a device plugin resource: the PF is read with what the plugin's selectors match."""
        return any(g.resource for g in self.vfs)

    @property
    def wants_vf_rdma(self) -> bool:
        """A resource asks isRdma: each VF is read with its RDMA devices."""
        return any(g.resource and g.rdma for g in self.vfs)

    @property
    def wants_vf_mtu(self) -> bool:
        return any(g.mtu is not None for g in self.vfs)

    @property
    def autoprobe_wanted(self) -> Optional[bool]:
        """sriov_drivers_autoprobe to keep: the key's value; else 1 (the kernel's default), or None
        (leave it) on an externally managed PF."""
        if self.drivers_autoprobe is not None:
            return self.drivers_autoprobe
        return None if self.externally_managed else True

    def vf_specs(self) -> Tuple[VfSpec, ...]:
        return tuple(self.vf(i) for i in range(self.num_vfs))

    def named_drivers(self) -> FrozenSet[str]:
        """Driver names VFs must be bound to (not none/any/default)."""
        return frozenset(g.driver for g in self.vfs if g.driver not in (DRIVER_DEFAULT, DRIVER_NONE, DRIVER_ANY))


DEFAULT_RESOURCE_PREFIX = "intel.com"  # the SR-IOV device plugin's own default --resource-prefix


@dataclass(frozen=True)
class DesiredState:
    """A validated config: its PF blocks and node-wide sections, with the bytes it was read from."""

    source: str
    raw: bytes = field(repr=False, compare=False)  # the file's bytes
    version: int = 1
    pfs: Tuple[PfSpec, ...] = ()
    resource_prefix: str = DEFAULT_RESOURCE_PREFIX  # [device_plugin] resource_prefix
    # [device_plugin] config_file: where the node's device-plugin config.json is written once converged
    device_plugin_file: Optional[str] = None
    metrics_textfile: Optional[str] = None  # [metrics] textfile: where the daemon writes Prometheus metrics
    rdma_netns: Optional[str] = None  # "exclusive" | "shared": ib_core's netns mode (check --fix); None: untouched

    @property
    def digest(self) -> str:
        """sha256 of the file's bytes, recorded in the state file."""
        return _sha256(self.raw).hexdigest()

    def resources(self) -> Tuple[str, ...]:
        """Resource names in the order the file first names them."""
        seen: Dict[str, None] = {}
        for spec in self.pfs:
            for group in spec.vfs:
                if group.resource is not None:
                    seen.setdefault(group.resource, None)
        return tuple(seen)


# ---------------------------------------------------------------------------- InfiniBand VF GUIDs

GUID_AUTO = "auto"
GUID_KEYS = ("node_guid", "port_guid")  # the netlink attributes IFLA_VF_IB_NODE_GUID, IFLA_VF_IB_PORT_GUID
MAX_AUTO_GUID_VF = 0x7FFF  # the derived GUID's last 16 bits hold (VF index << 1) | port


@dataclass(frozen=True)
class GuidSpec:
    """A VF group's InfiniBand GUIDs: derived (`auto`) or given (one VF's node and/or port GUID)."""

    auto: bool = False
    node_guid: Optional[str] = None
    port_guid: Optional[str] = None

    def wanted(self, vf: int, pf_guid: Optional[str]) -> Optional[Dict[str, str]]:
        """{"node_guid": ..., "port_guid": ...} for VF `vf`; None when derived and the PF has no GUID."""
        if not self.auto:
            return {k: v for k, v in (("node_guid", self.node_guid), ("port_guid", self.port_guid)) if v}
        if pf_guid is None:
            return None
        return {"node_guid": derive_vf_guid(pf_guid, vf, port=False),
                "port_guid": derive_vf_guid(pf_guid, vf, port=True)}


def guid_int(text: str) -> int:
    return int(text.replace(":", ""), 16)


def guid_text(value: int) -> str:
    return value.to_bytes(8, "big").hex(":")


def derive_vf_guid(pf_guid: str, vf: int, port: bool) -> str:
    """The rule `guid = "auto"` follows (docs/config-reference.md, "InfiniBand VF GUIDs"):

        byte 0      the PF GUID's byte 0 with the locally administered bit (0x02) set
        bytes 1-2   the PF GUID's bytes 1-2 (with byte 0: the PF's OUI)
        bytes 3-5   the PF GUID's bytes 5-7 (what makes the PF's GUID unique within its OUI)
        bytes 6-7   (VF index << 1) | 1 for the port GUID, 0 for the node GUID

    Vendors' GUIDs are universally administered (bit 0x02 of byte 0 clear): no derived GUID can be
    any HCA's, switch's or PF's own. Two derived GUIDs are equal only for the same PF's OUI and last
    24 bits (ConnectX GUIDs are the port MAC with 03:00 inserted: those 24 bits are the MAC's own,
    unique within the OUI), the same VF and the same kind."""
    raw = guid_int(pf_guid).to_bytes(8, "big")
    tail = (vf << 1) | int(port)
    return guid_text(int.from_bytes(bytes([raw[0] | 0x02, raw[1], raw[2], raw[5], raw[6], raw[7]]), "big") << 16 | tail)


# ---------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class VfState:
    """One VF as observed: its driver, override and netdevs, and what the comparison asked for (settings, MTU,
    IOMMU group, RDMA devices)."""

    index: int
    pci: str
    driver: Optional[str]
    driver_override: Optional[str]
    netdevs: Tuple[str, ...] = ()
    # The VF's net/ directory exists but shows no netdev from this namespace:
    # its netdev was moved into another network namespace (a pod).
    netdev_elsewhere: bool = False
    iommu_group: Optional[str] = None
    links: Optional[VfLinks] = None  # None: not read (no settings wanted), or unknown (no netlink)
    mtu: Optional[int] = None  # the VF netdev's MTU, when it has one here
    # its RDMA devices (<VF>/infiniband/, what the device plugin's isRdma reads), read only when a
    # resource of its PF's block asks isRdma; None: not read
    rdma_devices: Optional[Tuple[str, ...]] = None


@dataclass(frozen=True)
class PfState:
    """One SR-IOV PF as observed: identity, driver, VF count and limits, and its VFs when they were read."""

    pci: str
    vendor: Optional[str]  # "8086", lower-case, no 0x
    device: Optional[str]
    driver: Optional[str]
    netdevs: Tuple[str, ...]
    mac: Optional[str]  # permanent MAC where the kernel (or the capture) says so
    total_vfs: Optional[int]
    num_vfs: Optional[int]
    autoprobe: Optional[bool]
    vf_device: Optional[str]
    vfs: Tuple[VfState, ...] = ()
    # False when only the PF itself was read (a PF no block selects, or outside a per-PF run)
    vfs_observed: bool = True
    # The driver the kernel would bind to these VFs by ID (modules.alias), when it was needed and known
    vf_default_driver: Optional[str] = None
    # Every driver the kernel's ID tables (modules.alias) give these VFs by default; () none does,
    # None: not known here (no module aliases to read) or not asked
    vf_default_drivers: Optional[Tuple[str, ...]] = None
    # virtfnN links that lead to no VF of this PF (a VF removed by hand leaves its link dangling):
    # the kernel will not create VF N again while the link is there
    stale_virtfns: Tuple[int, ...] = ()
    bus: str = "pci"  # "pci", or "netdevsim" (VFs without PCI functions: no drivers to bind)
    mtu: Optional[int] = None  # the PF netdev's MTU
    eswitch_mode: Optional[str] = None  # read only when a block wants one
    links_error: Optional[str] = None  # why the VF settings could not be read, when they could not
    eswitch_error: Optional[str] = None  # why the eswitch mode could not be read
    # InfiniBand, read only when a block wants VF GUIDs: the PF netdev's `type` (32: ARPHRD_INFINIBAND)
    # and the node GUID of its RDMA device (<PF>/infiniband/<dev>/node_guid), "xx:...:xx"
    link_type: Optional[int] = None
    ib_guid: Optional[str] = None
    # Where the VFs' GUIDs (VfLinks.node_guid/port_guid) were read back: "netlink" (IFLA_VF_IB_*_GUID,
    # ndo_get_vf_guid: Linux 5.5+) or "sysfs" (MLNX_OFED's mlx5_core: <PF>/sriov/<N>/{node,port}, the
    # files /sys/class/infiniband/<dev>/device/sriov/<N>/ names); None: not asked, or no VF reported any
    vf_guids_from: Optional[str] = None
    # why some VF's GUIDs could not be read back by either, when they could not (VfLinks' GUIDs None)
    vf_guids_error: Optional[str] = None
    # What the device plugin's selectors match, read only when the PF's block names a resource
    # (`plugin_facts`; `link_type` too): a present VF's own (vendor, device) and PCI class (else the PF's class)
    plugin_facts: bool = False
    vf_ids: Optional[Tuple[str, str]] = None
    vf_class: Optional[int] = None

    @property
    def devlink_handle(self) -> str:
        return f"{self.bus}/{self.pci}"

    @property
    def name(self) -> Optional[str]:
        return self.netdevs[0] if self.netdevs else None

    @property
    def label(self) -> str:
        return f"{self.pci} ({self.name})" if self.name else self.pci

    def vf(self, index: int) -> Optional[VfState]:
        for vf in self.vfs:
            if vf.index == index:
                return vf
        return None


@dataclass(frozen=True)
class HostState:
    """What one observation of the host found: its SR-IOV PFs and what resolving and planning need of the rest."""

    pfs: Tuple[PfState, ...]
    pci_drivers: FrozenSet[str] = field(default_factory=frozenset)
    iommu_groups: bool = False  # /sys/kernel/iommu_groups has entries
    pci_devices: FrozenSet[str] = field(default_factory=frozenset)  # every PCI function, PF or not
    netdev_owners: Dict[str, str] = field(default_factory=dict)  # netdev name -> PCI address (names asked about)
    physfn: Dict[str, str] = field(default_factory=dict)  # VF PCI address -> its PF (addresses asked about)
    vhost_net: Optional[bool] = None  # /dev/vhost-net exists (read only when a resource asks needVhostNet)
    # netdev name -> its alternative names (None: unknown here), asked only when a selector needs them
    # (netlink: on a live host the first question imports pyroute2)
    altname_reader: Optional[Callable[[str], Optional[Tuple[str, ...]]]] = field(
        default=None, compare=False, repr=False)
    _altnames: Dict[str, Optional[Tuple[str, ...]]] = field(default_factory=dict, compare=False, repr=False)

    def altnames(self, pf: PfState) -> Optional[Tuple[str, ...]]:
        """The alternative names of the PF's netdev(s), read once; () none, None when they cannot be read."""
        if self.altname_reader is None:
            return None
        names: list = []
        for ifname in pf.netdevs:
            if ifname not in self._altnames:
                self._altnames[ifname] = self.altname_reader(ifname)
            found = self._altnames[ifname]
            if found is None:
                return None
            names += [n for n in found if n not in names]
        return tuple(names)

    def pf(self, pci: str) -> Optional[PfState]:
        for pf in self.pfs:
            if pf.pci == pci:
                return pf
        return None
