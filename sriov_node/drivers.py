"""What each kernel driver can do for SR-IOV: one table, read from the drivers' sources (Linux 6.1-6.18).

The planner takes the eswitch order from it, the preflight (engine/preflight.py) refuses a plan
with a step the PF's driver is known to refuse, before the first write, and the simulated kernel
(sim/net.py) refuses from the same facts. A driver not in the table is not judged: its steps are
tried at apply. Where the host answers for itself (devlink `eswitch get`, the link speed, the
netdev's MTU range), its answer wins over the table.

Each row cites the functions it was read from. Pure: no host access here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterator, List, NamedTuple, Optional, Tuple

from sriov_node.model import SETTING_ATTR, VF_SETTING_KEYS

# When a PF driver lets its eswitch mode change (the order the planner follows):
#   no_vfs       only while no VF exists (ice): 0 VFs -> mode -> N VFs
#   vfs_unbound  with VFs created and unbound (mlx5 before ~5.3 refused without VFs): N -> unbind -> mode -> rebind
#   any          at any time (netdevsim; modern mlx5 too, but the order above is safe on every version)
EswitchOrder = str
ESWITCH_DEFAULT_ORDER = "no_vfs"  # the order that is safe on a driver we know nothing of

ALL_SETTINGS = frozenset(VF_SETTING_KEYS)
# The keys a driver may implement only in part of its ndo: the errno it answers for a value it does
# not take, and the value every driver that has the ndo takes (qos rides with vlan everywhere).
PARTIAL = {"vlan_proto": ("EPROTONOSUPPORT", "802.1Q"), "min_tx_rate": ("EINVAL", 0)}


@dataclass(frozen=True)
class Driver:
    """One row of the driver table: what a driver can do for SR-IOV, as its kernel source says."""

    name: str
    role: str  # "pf" (makes VFs), "vf" (binds VFs), "pf+vf" (one driver for both: mlx5_core, nvme)
    eswitch: Optional[EswitchOrder] = None  # None: no devlink eswitch_mode_get/set (EOPNOTSUPP)
    settings: FrozenSet[str] = frozenset()  # VF settings (config keys) its ndo_set_vf_* implement
    max_rate_floor: int = 0  # the lowest non-zero max_tx_rate it takes (EINVAL below)
    # how a VF rate depends on the PF's link: None not at all; "speed" a max_tx_rate above the link speed
    # is EINVAL (so a non-zero one with the link down); "up" also any rate request while the link is down
    rate_link: Optional[str] = None
    # the VFs' min_tx_rate together may not exceed the PF's link speed (EINVAL; so no min_tx_rate with the
    # link down): the driver guarantees no more bandwidth than the link has (ice_min_tx_rate_oversubscribed)
    min_rate_link: bool = False
    rate_devices: Optional[FrozenSet[str]] = None  # the only PF IDs (vendor:device) with VF rates, if limited
    rates_in_switchdev: bool = True  # False: ndo_set_vf_rate answers EOPNOTSUPP in switchdev (devlink rate)
    mtu: Optional[Tuple[int, int]] = None  # the netdev's (min_mtu, max_mtu); None: no netdev
    unreported: FrozenSet[str] = frozenset()  # settings ndo_get_vf_config does not report
    # what sets its sriov_totalvfs, when not the PCI capability alone: "firmware" (mlx5: the firmware's
    # NUM_OF_VFS, changed with mstconfig/mlxconfig and a power cycle), or the driver's own cap
    totalvfs_from: Optional[str] = None
    devlink: bool = True  # False: it registers no devlink instance, so devlink answers ENODEV to its PF
    # ndo_set_vf_guid/ndo_get_vf_guid on its InfiniBand netdev (IPoIB over the driver's RDMA device):
    # InfiniBand VF node/port GUIDs (IFLA_VF_IB_NODE_GUID/PORT_GUID); only while the PF is in IB mode
    ib_guids: bool = False
    # binds a device, then lets it go when its asynchronous initialisation fails (nvme: nvme_probe
    # queues nvme_reset_work, whose failure ends in nvme_remove_dead_ctrl): a VF it took is judged
    # only after the probe grace. The drivers without it probe synchronously or stay bound on failure.
    async_release: bool = False
    sources: str = ""

    def has_ndo(self, key: str) -> bool:
        """Whether the ndo that carries `key` exists (vlan_proto rides on ndo_set_vf_vlan...)."""
        attr = SETTING_ATTR[key]
        return any(SETTING_ATTR[k] == attr for k in self.settings)


@dataclass(frozen=True)
class Refusal:
    """A step the driver is known to refuse: what, the errno it answers, why, and the fix."""

    key: str  # the config key: "eswitch_mode", "mtu", "pf.vfs.vlan_proto" as "vlan_proto", "driver"
    errno: str
    why: str
    fix: str
    vf: Optional[int] = None
    value: Any = None

    def to_dict(self) -> Dict[str, Any]:
        return {"key": self.key, "vf": self.vf, "errno": self.errno, "why": self.why, "fix": self.fix,
                "value": self.value}


_NO_ESWITCH = ("no devlink eswitch_mode_get/set: devlink answers EOPNOTSUPP")

DRIVERS: Dict[str, Driver] = {d.name: d for d in (
    Driver("i40e", "pf", None, ALL_SETTINGS - {"vlan_proto", "min_tx_rate"}, rate_link="speed", mtu=(68, 9702),
           sources="i40e_virtchnl_pf.c: i40e_ndo_set_vf_mac, i40e_ndo_set_vf_port_vlan (vlan_proto != 802.1Q: "
                   "EPROTONOSUPPORT), i40e_ndo_set_vf_bw (min_tx_rate: EINVAL 'Invalid min tx rate'; "
                   "i40e_set_bw_limit: max above the link speed EINVAL), i40e_ndo_set_vf_link_state, "
                   "i40e_ndo_set_vf_spoofchk, i40e_ndo_set_vf_trust; i40e_devlink.c registers no eswitch ops "
                   f"({_NO_ESWITCH}); max_mtu I40E_MAX_RXBUFFER - I40E_PACKET_HDR_PAD"),
    Driver("ice", "pf", "no_vfs", ALL_SETTINGS - {"vlan_proto"}, rate_link="speed", min_rate_link=True,
           mtu=(68, 9702),
           sources="ice_sriov.c: ice_set_vf_mac, ice_set_vf_port_vlan (802.1ad only in double-VLAN mode, "
                   "ice_is_supported_port_vlan_proto: EPROTONOSUPPORT; not the default), ice_set_vf_bw (min and "
                   "max: ice_min_tx_rate_oversubscribed, the VFs' min_tx_rate summed above the current link "
                   "speed: EINVAL; ice_lib.c ice_set_min_bw_limit/ice_set_max_bw_limit, a rate above "
                   "ice_get_link_speed_kbps: EINVAL, the link speed being 0 with the link down; a min_tx_rate "
                   "while DCB is on: EOPNOTSUPP, not judged here), ice_set_vf_link_state, ice_set_vf_spoofchk, "
                   "ice_set_vf_trust; ice_eswitch.c: "
                   "ice_eswitch_mode_set refuses with VFs ('allowed only if there is no VFs created'); "
                   "max_mtu ICE_MAX_MTU"),
    Driver("iavf", "vf", mtu=(68, 9706),
           sources="iavf_main.c: a VF driver, no sriov_configure, no ndo_set_vf_*; max_mtu "
                   "IAVF_MAX_RXBUFFER - IAVF_PACKET_HDR_PAD"),
    Driver("ixgbe", "pf", None, ALL_SETTINGS - {"vlan_proto", "min_tx_rate"}, max_rate_floor=11, rate_link="up",
           mtu=(68, 9710),
           sources="ixgbe_sriov.c: ixgbe_ndo_set_vf_mac, ixgbe_ndo_set_vf_vlan (vlan_proto != 802.1Q: "
                   "EPROTONOSUPPORT), ixgbe_ndo_set_vf_bw (link down or not 10G: EINVAL; min_tx_rate: EINVAL; "
                   "max <= 10 or above the link speed: EINVAL), ixgbe_ndo_set_vf_link_state, "
                   "ixgbe_ndo_set_vf_spoofchk, ixgbe_ndo_set_vf_trust; no devlink eswitch ops; max_mtu "
                   "IXGBE_MAX_JUMBO_FRAME_SIZE - (ETH_HLEN + ETH_FCS_LEN)"),
    Driver("ixgbevf", "vf", mtu=(68, 9710), sources="ixgbevf_main.c: a VF driver; max_mtu as ixgbe's"),
    Driver("igb", "pf", None, frozenset({"mac", "vlan", "qos", "max_tx_rate", "spoofchk", "trust"}),
           rate_link="up", rate_devices=frozenset({"8086:10c9", "8086:10e6", "8086:10e7", "8086:10e8",
                                                         "8086:150a", "8086:150d", "8086:1518", "8086:1526"}),
           mtu=(68, 9216), devlink=False,
           sources="igb_main.c igb_netdev_ops: igb_ndo_set_vf_mac, igb_ndo_set_vf_vlan (vlan_proto != 802.1Q: "
                   "EPROTONOSUPPORT), igb_ndo_set_vf_bw (not an 82576: EOPNOTSUPP; min_tx_rate: EINVAL; link "
                   "down (E1000_STATUS_LU) or max above igb_link_mbps: EINVAL), igb_ndo_set_vf_spoofchk, "
                   "igb_ndo_set_vf_trust; no ndo_set_vf_link_state (EOPNOTSUPP); no devlink; max_mtu "
                   "MAX_STD_JUMBO_FRAME_SIZE"),
    Driver("igbvf", "vf", mtu=(68, 9216), sources="igbvf netdev.c: a VF driver"),
    Driver("mlx5_core", "pf+vf", "vfs_unbound", ALL_SETTINGS, rates_in_switchdev=False, mtu=(68, 9978),
           totalvfs_from="firmware", ib_guids=True,
           sources="en_main.c mlx5e_set_vf_mac/_vlan/_rate/_spoofchk/_trust/_link_state -> eswitch.c "
                   "mlx5_eswitch_set_vport_mac, __mlx5_eswitch_set_vport_vlan (802.1ad too), "
                   "mlx5_eswitch_set_vport_rate (min and max; legacy rates refused in switchdev: use devlink "
                   "rate; esw/qos.c esw_qos_set_vport_min_rate/_max_rate check only the firmware's QoS caps, "
                   "EOPNOTSUPP, and no link speed: that is devlink rate's esw_qos_devlink_rate_to_mbps, so a "
                   "legacy max_tx_rate above the link is taken as given), mlx5_eswitch_set_vport_spoofchk, "
                   "_trust, _state; mlx5_devlink_eswitch_mode_set "
                   "(any time on 6.x; before ~5.3 only with VFs, unbound); InfiniBand: ipoib_set_vf_guid -> "
                   "ib_set_vf_guid -> mlx5_ib_set_vf_guid (ib_virt.c: modify_hca_vport_context, kept in "
                   "vfs_ctx and restored on the next SR-IOV enable), mlx5_ib_get_vf_guid (0 until set)"),
    Driver("netdevsim", "pf", "any", ALL_SETTINGS, rates_in_switchdev=False, mtu=(68, 65535),
           sources="netdevsim/netdev.c: nsim_set_vf_mac, nsim_set_vf_vlan (any proto), nsim_set_vf_rate "
                   "('Not supported in switchdev mode. Please use devlink API.': EOPNOTSUPP), "
                   "nsim_set_vf_spoofchk, nsim_set_vf_link_state, nsim_set_vf_trust; dev.c "
                   "nsim_devlink_eswitch_mode_set: any time; max_mtu ETH_MAX_MTU"),
    Driver("nvme", "pf+vf", devlink=False, async_release=True,
           sources="drivers/nvme/host/pci.c: nvme_pci_sriov_configure; no netdev, no devlink, no VF settings; "
                   "nvme_probe queues nvme_reset_work, nvme_remove_dead_ctrl releases a device that fails it "
                   "(the lab's QEMU nvme VFs: bound, then let go)"),
)}


# drivers that bind any device (driver_override, new_id) and have no sriov_configure: a PF bound to
# one cannot make VFs (preflight refuses a new count on it, check names it)
STUB_DRIVERS = frozenset({"pci-stub", "uio_pci_generic"})
# PF drivers with sriov_configure (VFs through sriov_numvfs) that have no row above: nothing more
# is known of them here than that they make VFs
OTHER_PF_DRIVERS = frozenset({
    "fm10k", "idpf", "bnxt_en", "qede", "nfp", "sfc", "be2net", "hns3", "hinic", "ionic", "cxgb4", "octeon_ep",
    "qlcnic", "liquidio", "pci-pf-stub",
})


def makes_vfs(name: Optional[str]) -> Optional[bool]:
    """Whether a PF bound to driver `name` takes a new count through sriov_numvfs (its driver has
    sriov_configure, drivers/pci/iov.c sriov_numvfs_store): True a PF driver of the table or
    OTHER_PF_DRIVERS; False none bound, a stub or a VF-only driver (ENOENT); None not known here.
    vfio-pci depends on how it was loaded (enable_sriov=1): None here, its callers ask the host.
    The one answer preflight (engine/preflight.py) and `check` (checks/diagnose.py) give."""
    if not name:
        return False
    if name in STUB_DRIVERS:
        return False
    row = driver(name)
    if row is not None:
        return row.role != "vf"
    if name in OTHER_PF_DRIVERS or name.replace("_", "-") in OTHER_PF_DRIVERS:
        return True
    return None


def no_vfs_why(name: str) -> str:
    """Why a PF bound to `name` cannot make VFs (makes_vfs False, a driver bound)."""
    if name in STUB_DRIVERS:
        return f"{name} binds any device (driver_override, new_id) and has no sriov_configure"
    return f"{name} is a VF driver: it has no sriov_configure"


# Drivers that bind any device they are given through driver_override (or new_id): no static ID table
# of their own (pci-stub, uio_pci_generic, DPDK's igb_uio, pci-pf-stub) or only an override-only
# catch-all (vfio-pci's `vfio_pci:` alias). Never refused for the device they are asked to drive.
GENERIC_BINDERS = STUB_DRIVERS | frozenset({"vfio-pci", "igb_uio", "pci-pf-stub"})
_ANY_PCI_DEVICE = "pci:v*d*sv*sd*bc*sc*i*"  # a modalias no ID table can refuse: matched only by a wildcard


def _norm(name: str) -> str:
    return name.replace("-", "_")


def binds_by_id_table(name: str, aliases: Optional[Tuple[str, ...]]) -> Optional[bool]:
    """Whether driver `name` drives only the devices its ID table names (`aliases`: its module's `pci:`
    patterns in modules.alias): True a device-specific driver; False one that binds any device through
    driver_override (GENERIC_BINDERS, a module with no `pci:` alias, or one whose table has a wildcard
    entry, `pci:v*d*sv*sd*bc*sc*i*`); None not known (modules.alias unreadable)."""
    if _norm(name) in {_norm(n) for n in GENERIC_BINDERS}:
        return False
    if aliases is None:
        return None
    return bool(aliases) and not any(fnmatch.fnmatchcase(_ANY_PCI_DEVICE, p) for p in aliases)


def vf_driver_refusal(name: str, aliases: Optional[Tuple[str, ...]], matching: Optional[Tuple[str, ...]],
                      vf_id: Optional[str], *, vf: Optional[int] = None) -> Optional[Refusal]:
    """A VF `driver` that cannot drive the VF: a device-specific driver (binds_by_id_table) none of whose
    ID table entries matches the VF's modalias, `matching` being the drivers whose entries do (the
    kernel's default drivers for that modalias: observe.default_drivers_of, or future_default_drivers
    for VFs not made yet). driver_override lets the bus match it all the same (pci_match_device's
    pci_device_id_any), and the driver's probe refuses a device it has no entry for: bind answers
    ENODEV, and the VF is left unbound with its override set. None: it can, or it is not known here."""
    if matching is None or _norm(name) in {_norm(m) for m in matching}:
        return None
    if binds_by_id_table(name, aliases) is not True:
        return None
    device = f" ({vf_id})" if vf_id else ""
    if matching:
        which = ", ".join(matching)
        others = f"the driver{'s' if len(matching) > 1 else ''} whose ID table names these VFs: {which}"
        fix = (f"set driver = \"{matching[0]}\" (the VFs' own driver), or \"vfio-pci\" for a VM or DPDK, "
               "or drop driver to get the kernel's default")
    else:
        others = "no installed driver's ID table names these VFs"
        fix = "set driver = \"vfio-pci\" (binds any device through driver_override), or \"none\""
    return Refusal("driver", "ENODEV",
                   f"{name} cannot drive these VFs{device}: its ID table (modules.alias) has no entry for them, "
                   f"and driver_override does not make a device-specific driver take a device it does not know; "
                   f"{others}", fix, vf=vf, value=name)


FIRMWARE_TOOLS = ("mstconfig", "mlxconfig")  # mstflint's and MFT's: the same query and set


def firmware_fix(pci: str, num_vfs: int) -> str:
    """How to raise an mlx5 PF's firmware VF limit (read-only for sriov-node: it needs a power cycle)."""
    return (f"mstconfig -d {pci} set SRIOV_EN=1 NUM_OF_VFS={num_vfs} (or mlxconfig), then power cycle the host "
            "(the firmware reads it at power-on: a warm reboot is not enough)")


def capacity_words(name: Optional[str], pci: str, num_vfs: int, total: int) -> str:
    """Why a PF has only `total` VFs, and the fix, in the words of its driver's row."""
    row = driver(name)
    if row is not None and row.totalvfs_from == "firmware":
        return (f"the firmware's limit ({row.name}: sriov_totalvfs is its NUM_OF_VFS), not the kernel's; "
                f"use at most {total}, or raise it: {firmware_fix(pci, num_vfs)}")
    return f"use at most {total} (the PF driver or firmware sets the limit)"


def driver(name: Optional[str]) -> Optional[Driver]:
    """The row of a driver (module spelling with - or _ alike), or None: not known here."""
    if not name:
        return None
    return DRIVERS.get(name) or DRIVERS.get(name.replace("-", "_")) or DRIVERS.get(name.replace("_", "-"))


def eswitch_order(name: Optional[str]) -> EswitchOrder:
    row = driver(name)
    return row.eswitch if row is not None and row.eswitch is not None else ESWITCH_DEFAULT_ORDER


# ---------------------------------------------------------------------------- judgements (pure)


def eswitch_refusal(row: Driver, mode: str) -> Optional[Refusal]:
    if row.eswitch is not None:
        return None
    why = _NO_ESWITCH if row.devlink else "it registers no devlink instance: devlink answers ENODEV"
    return Refusal("eswitch_mode", "EOPNOTSUPP" if row.devlink else "ENODEV",
                   f"{row.name} has no eswitch mode ({why}); "
                   "switchdev needs mlx5_core, ice or netdevsim", "drop eswitch_mode from this block", value=mode)


def mtu_refusal(row: Driver, mtu: int, key: str = "mtu", vf: Optional[int] = None,
                seen: Optional[Tuple[int, int]] = None) -> Optional[Refusal]:
    """`seen`: the netdev's own (IFLA_MIN_MTU, IFLA_MAX_MTU), which wins over the table."""
    low, high = seen or row.mtu or (0, 0)
    if (seen is None and row.mtu is None) or low <= mtu <= high:
        return None
    where = "the netdev reports" if seen else f"{row.name}'s max_mtu"
    return Refusal(key, "EINVAL", f"MTU {mtu} is outside {low}-{high} ({where})",
                   f"set {key} to at most {high}", vf=vf, value=mtu)


def setting_refusals(row: Driver, vf: int, settings: Dict[str, Any], *, pf_id: Optional[str] = None,
                     switchdev: bool = False, link_speed: Optional[int] = None) -> List[Refusal]:
    """What the PF driver `row` answers to these VF settings (config key -> value), in the kernel's order.
    `link_speed`: the PF's link speed in Mbit/s, -1 when its link is down, None when not known."""
    out: List[Refusal] = []
    name = row.name
    rate = any(k in settings for k in ("min_tx_rate", "max_tx_rate"))
    missing = set()
    for key in VF_SETTING_KEYS:
        if key not in settings:
            continue
        value = settings[key]
        attr = SETTING_ATTR[key]
        if not row.has_ndo(key):
            if attr in missing:
                continue  # one refusal per ndo: named by its first key
            missing.add(attr)
            out.append(Refusal(key, "EOPNOTSUPP", f"{name} has no ndo_set_vf_{attr}", f"drop {key} for this PF's VFs",
                               vf=vf, value=value))
        elif key not in row.settings and key in PARTIAL and value != PARTIAL[key][1]:
            what = {"vlan_proto": f"{name} supports only 802.1Q VF VLANs",
                    "min_tx_rate": f"{name} has no minimum tx rate"}[key]
            out.append(Refusal(key, PARTIAL[key][0], what, f"drop {key} (or set it to {PARTIAL[key][1]})",
                               vf=vf, value=value))
    if not rate or not row.has_ndo("max_tx_rate"):
        return out
    high = settings.get("max_tx_rate") or 0
    low = settings.get("min_tx_rate") or 0
    if row.rate_devices is not None and pf_id is not None and pf_id not in row.rate_devices:
        out.append(Refusal("max_tx_rate", "EOPNOTSUPP", f"{name} has VF rate limits only on some devices "
                           f"({', '.join(sorted(row.rate_devices))}), not {pf_id}",
                           "drop min_tx_rate/max_tx_rate for this PF's VFs", vf=vf, value=high))
    elif switchdev and not row.rates_in_switchdev:
        out.append(Refusal("max_tx_rate", "EOPNOTSUPP", f"{name} refuses legacy VF rates in switchdev mode",
                           "set rates with devlink rate on the representor, or use eswitch_mode = \"legacy\"",
                           vf=vf, value=high))
    elif row.min_rate_link and low and link_speed is not None and link_speed <= 0:
        out.append(Refusal("min_tx_rate", "EINVAL", f"{name} guarantees a min_tx_rate only out of the PF's link "
                           "speed, and the link is down (0 Mbit/s)",
                           "bring the PF's link up (cable, switch port), then apply; or set min_tx_rate to 0",
                           vf=vf, value=low))
    elif row.min_rate_link and low and link_speed is not None and low > link_speed:
        out.append(Refusal("min_tx_rate", "EINVAL", f"{name} takes no min_tx_rate above the link speed "
                           f"({link_speed} Mbit/s)", f"set min_tx_rate to at most {link_speed} (the PF's VFs' "
                           "min_tx_rate together)", vf=vf, value=low))
    elif high and high < row.max_rate_floor:
        out.append(Refusal("max_tx_rate", "EINVAL", f"{name} takes no max_tx_rate below {row.max_rate_floor} Mbit/s",
                           f"set max_tx_rate to 0 (no limit) or at least {row.max_rate_floor}", vf=vf, value=high))
    elif row.rate_link and link_speed is not None and (high or row.rate_link == "up") and link_speed <= 0:
        out.append(Refusal("max_tx_rate", "EINVAL", f"{name} sets VF rates only while the PF's link is up, "
                           "and it is down", "bring the PF's link up (cable, switch port), then apply",
                           vf=vf, value=high))
    elif row.rate_link and link_speed is not None and high > link_speed > 0:
        out.append(Refusal("max_tx_rate", "EINVAL", f"{name} takes no max_tx_rate above the link speed "
                           f"({link_speed} Mbit/s)", f"set max_tx_rate to at most {link_speed}", vf=vf, value=high))
    return out


def min_rate_sum_refusals(row: Driver, wanted: List[Tuple[int, int]], current: Dict[int, int],
                          link_speed: Optional[int]) -> List[Refusal]:
    """The min_tx_rate a driver with `min_rate_link` refuses for the PF's VFs together
    (ice_min_tx_rate_oversubscribed: the other VFs' min_tx_rate plus the one asked for above the link
    speed is EINVAL, whatever the value asked, 0 too). `wanted`: (VF, min_tx_rate) a run sends; `current`:
    every VF's min_tx_rate before it (0 for VFs made anew). The VFs that lower theirs are judged first, then
    those that raise theirs, each in VF order, against what the driver holds by then (a VF the driver
    refuses keeps its old value; one refused alone by `setting_refusals`, above the link speed, is left
    to that refusal)."""
    if not row.min_rate_link or link_speed is None or link_speed <= 0 or not wanted:
        return []
    total = sum({**current, **dict(wanted)}.values())
    now = sum(current.values())
    if total > link_speed:
        why = (f"{row.name} refuses a min_tx_rate that oversubscribes the link: the PF's VFs' min_tx_rate would "
               f"add up to {total} Mbit/s, above the link speed ({link_speed} Mbit/s)")
        fix = f"lower min_tx_rate so that the PF's VFs' add up to at most {link_speed}"
    else:
        why = (f"{row.name} refuses any VF's min_tx_rate while the others' add up to more than the link speed "
               f"({link_speed} Mbit/s), and they add up to {now} Mbit/s now (was the link faster?)")
        fix = ("bring the link back to the speed the minimums were set for, or re-create the VFs (num_vfs = 0, "
               "then apply this file) to clear them")
    state = dict(current)
    out: List[Refusal] = []
    lower = [(vf, low) for vf, low in sorted(wanted) if low <= state.get(vf, 0)]
    higher = [(vf, low) for vf, low in sorted(wanted) if low > state.get(vf, 0)]
    for vf, low in lower + higher:
        if low > link_speed:
            continue
        if sum(v for k, v in state.items() if k != vf) + low > link_speed:
            out.append(Refusal("min_tx_rate", "EINVAL", why, fix, vf=vf, value=low))
        else:
            state[vf] = low
    return out


class Case(NamedTuple):
    """A config (PF keys, one VF group's keys) and host facts that make the driver refuse a step."""

    label: str
    pf: Dict[str, Any]
    vf: Dict[str, Any]
    link_speed: Optional[int] = None  # the PF's link: Mbit/s, -1 down; None as the host has it
    pf_down: bool = False  # the PF netdev administratively down: its `speed` answers EINVAL, `flags` lack IFF_UP


def implied_refusals(row: Driver) -> Iterator[Case]:
    """Every kind of refusal this row implies, with a config that triggers it: the domain the tests
    walk (a new row is tested by being here)."""
    if row.role == "vf":
        if row.mtu:
            yield Case("vf_mtu", {}, {"mtu": row.mtu[1] + 1})
        return
    if row.eswitch is None:
        yield Case("eswitch_mode", {"eswitch_mode": "switchdev"}, {})
    if row.mtu is None:
        return  # no netdev: no MTU, no VF settings either
    from sriov_node.config import MAX_MTU

    if row.mtu[1] < MAX_MTU:  # above the config's own bound the config refuses it (exit 2), not the driver
        yield Case("pf_mtu", {"mtu": row.mtu[1] + 1}, {})
    for key, sample in (("mac", "02:00:00:00:00:01"), ("vlan", 10), ("spoofchk", False), ("link_state", "enable"),
                        ("trust", True), ("max_tx_rate", 100)):
        if not row.has_ndo(key):
            yield Case(key, {}, {key: sample})
    if row.has_ndo("vlan") and "vlan_proto" not in row.settings:
        yield Case("vlan_proto", {}, {"vlan": 10, "vlan_proto": "802.1ad"})
    if not row.has_ndo("max_tx_rate"):
        return
    if "min_tx_rate" not in row.settings:
        yield Case("min_tx_rate", {}, {"min_tx_rate": 10, "max_tx_rate": 100})
    if row.rate_devices is not None:
        yield Case("rate_device", {}, {"max_tx_rate": 100})
    if row.rate_link:
        yield Case("rate_link_down", {}, {"max_tx_rate": 100}, link_speed=-1)
        yield Case("rate_pf_down", {}, {"max_tx_rate": 100}, pf_down=True)
        yield Case("rate_above_link", {}, {"max_tx_rate": 2000}, link_speed=1000)
    if row.min_rate_link:
        yield Case("min_rate_above_link", {}, {"min_tx_rate": 2000}, link_speed=1000)
        yield Case("min_rate_link_down", {}, {"min_tx_rate": 100}, link_speed=-1)
    if row.max_rate_floor:
        yield Case("max_tx_rate_floor", {}, {"max_tx_rate": row.max_rate_floor - 1})
    if row.eswitch is not None and not row.rates_in_switchdev:
        yield Case("rate_switchdev", {"eswitch_mode": "switchdev"}, {"max_tx_rate": 100})
