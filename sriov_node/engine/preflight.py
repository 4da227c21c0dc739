"""The checks `apply`, its dry run and `validate` run on a PF's plan before its first write.

Cheap by design (it runs before every PF plan that has actions): it looks only at what the plan's
actions need.

- `capabilities`: a step this host is known to refuse, from the driver table (sriov_node/drivers.py)
  and the host's own answers (a mode devlink reports, the PF's link speed, the kernel's module
  lists): the eswitch mode on a driver without one, a VF setting the PF driver lacks or a value it
  refuses (ice: the VFs' min_tx_rate together above the link speed), an MTU out of the driver's range, a
  driver module this kernel does not have, a VF driver that cannot drive the VFs (a device-specific
  driver whose ID table has no entry for their modalias: bind would answer ENODEV). Refused
  whole (exit 1, nothing written); a driver not in the table is not judged ("not known: tried at apply").
  A new VF count on a PF whose driver cannot make VFs is refused too (the kernel answers ENOENT): no
  driver bound, a stub (pci-stub, uio_pci_generic), vfio-pci loaded without enable_sriov=1.
- `preflight`: vfio-pci's IOMMU: a VF bound to vfio-pci needs an IOMMU group (exit 3).
"""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from sriov_node import drivers
from sriov_node.engine.actions import (BindDriver, LoadDriver, SetEswitchMode, SetNumVfs, SetPfMtu, SetVfGuids,
                                      SetVfMtu, SetVfSetting)
from sriov_node.engine.compare import GUIDS_UNREADABLE_FIX
from sriov_node.engine.hints import numvfs_error
from sriov_node.model import (DRIVER_ANY, DRIVER_DEFAULT, DRIVER_NONE, GUID_AUTO, GUID_KEYS, format_ranges, is_vfio,
                               split_setting)

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.host import Host
    from sriov_node.engine.plan import PfPlan


def preflight(host: "Host", pf_plan: "PfPlan") -> Optional[str]:
    """Why this PF's plan cannot work on this platform (refused, exit 3), or None."""
    binds = [a for a in pf_plan.actions if isinstance(a, BindDriver) and is_vfio(a.driver)]
    if not binds or host.sysfs.iommu_enabled():
        return None  # nothing needs an IOMMU group, or the IOMMU is on (every device has a group)
    # The IOMMU is off: only now is the platform read, to say why and how to turn it on.
    from sriov_node.checks.diagnose import FAIL, check_iommu
    from sriov_node.platform import PlatformState
    from sriov_node.host.platform import observe_boot, observe_iommu, read_cmdline, read_cpu_vendor

    state = PlatformState(host.root, host.is_real_root, read_cmdline(host), read_cpu_vendor(host),
                          observe_iommu(host, group_types=False), boot=observe_boot(host))
    result = check_iommu(state, wants_vfio=True)
    if result.status != FAIL:
        return None
    drivers = sorted({a.driver for a in binds})
    vfs = format_ranges([a.vf for a in binds])
    return (f"VF(s) {vfs} must bind to {', '.join(drivers)}, but the IOMMU is {result.seen}; nothing was written. "
            f"Fix: {result.fix}")



def _link_speed(host: "Host", ifname: Optional[str]) -> Optional[int]:
    """The PF netdev's `speed` (Mbit/s; -1 or less: no link), None when it cannot be read."""
    return host.sysfs.link_speed(ifname) if ifname else None


def _vf_driver(pf_plan: "PfPlan", index: int) -> Optional[str]:
    """The driver a VF's netdev will have: the one its group names, else the kernel's default."""
    want = pf_plan.target.spec.vf(index).driver
    if want not in (DRIVER_DEFAULT, DRIVER_ANY, DRIVER_NONE):
        return want
    pf = pf_plan.target.pf
    vf = pf.vf(index)
    if vf is not None and vf.driver:
        return vf.driver
    return (pf.vf_default_drivers or (None,))[0]


def _configures_sriov(host: "Host", driver: Optional[str]) -> bool:
    """Whether sriov_numvfs can take a new count with `driver` bound to the PF (False only when that
    is known): no driver, a stub (pci-stub, uio_pci_generic) or a VF-only driver has no
    sriov_configure; vfio-pci's answers ENOENT unless it was loaded with enable_sriov=1."""
    if driver == "vfio-pci":
        return host.sysfs.vfio_enable_sriov() is not False
    return drivers.makes_vfs(driver) is not False


def capabilities(host: "Host", pf_plan: "PfPlan") -> Tuple[List[drivers.Refusal], List[str]]:
    """(the plan's steps this host is known to refuse, notes on what is not known here)."""
    target = pf_plan.target
    spec, pf = target.spec, target.pf
    row = drivers.driver(pf.driver)
    refused: List[drivers.Refusal] = []
    unknown: List[str] = []
    switchdev = (spec.eswitch_mode or pf.eswitch_mode) == "switchdev"
    rates: List[Tuple[int, int]] = []  # (VF, min_tx_rate) the plan sends, for the driver's sum of them
    binds: Dict[str, List[int]] = {}  # driver -> the VFs the plan binds to it
    rate_speed: Optional[int] = None  # the PF's link speed, read for them
    for action in pf_plan.actions:
        if isinstance(action, SetNumVfs) and pf.bus == "pci" and action.value != action.current \
                and not _configures_sriov(host, pf.driver):
            # drivers/pci/iov.c sriov_numvfs_store: a new count needs a bound PF driver with
            # sriov_configure, else ENOENT. Said once per plan, of the count the block wants (a
            # resize writes 0 first), in the executor's own words for that errno (engine/hints.py)
            if not any(r.key == "num_vfs" for r in refused):
                why, fix = numvfs_error(errno.ENOENT, spec.num_vfs, total=pf.total_vfs, pf_driver=pf.driver)
                refused.append(drivers.Refusal("num_vfs", "ENOENT", why, fix, value=spec.num_vfs))
        elif isinstance(action, LoadDriver) and not action.default:
            if host.modules.has_module(action.driver) is False:
                refused.append(drivers.Refusal(
                    "driver", "ENOENT", f"this kernel has no module {action.driver} (not loaded, not in "
                    "modules.dep, modules.builtin or modules.alias)",
                    "fix the driver name (a typo? ls /sys/bus/pci/drivers; modinfo NAME), or install the "
                    "package that ships the module", value=action.driver))
        elif isinstance(action, SetEswitchMode):
            if row is None:
                unknown.append("eswitch_mode")
            elif pf.eswitch_mode is None:  # a mode devlink reports wins over the table
                found = drivers.eswitch_refusal(row, action.value)
                refused += [found] if found else []
        elif isinstance(action, SetPfMtu):
            if row is None:
                unknown.append("mtu")
            else:
                found = drivers.mtu_refusal(row, action.value)
                refused += [found] if found else []
        elif isinstance(action, SetVfMtu):
            vf_row = drivers.driver(_vf_driver(pf_plan, action.vf))
            if vf_row is None:
                unknown.append("the VFs' mtu")
            else:
                found = drivers.mtu_refusal(vf_row, action.value, vf=action.vf)
                refused += [found] if found else []
        elif isinstance(action, BindDriver):
            binds.setdefault(action.driver, []).append(action.vf)
        elif isinstance(action, SetVfGuids):
            refused += _guid_refusals(spec, pf, action)
        elif isinstance(action, SetVfSetting):
            if row is None:
                unknown.append(action.attr)
                continue
            speed = _link_speed(host, pf.name) if (row.rate_link or row.min_rate_link) and action.attr == "rate" \
                else None
            if action.attr == "rate":
                rates += [(vf, split_setting("rate", value).get("min_tx_rate") or 0) for vf, value in action.values]
                rate_speed = speed
            # what the driver answers depends on the value, not on the VF: judged once per value
            by_value: Dict[Any, List[drivers.Refusal]] = {}
            for vf, value in action.values:
                answer = by_value.get(value) if _hashable(value) else None
                if answer is None:
                    answer = drivers.setting_refusals(
                        row, vf, split_setting(action.attr, value), pf_id=f"{pf.vendor}:{pf.device}",
                        switchdev=switchdev, link_speed=speed)
                    if _hashable(value):
                        by_value[value] = answer
                refused += [r if r.vf == vf else replace(r, vf=vf) for r in answer]
    for name, vfs in binds.items():
        refused += _driver_refusals(host, pf_plan, name, vfs)
    if rates and row is not None and row.min_rate_link:
        refused += drivers.min_rate_sum_refusals(row, rates, _min_rates_before(pf_plan), rate_speed)
    notes = []
    if unknown:
        notes.append(f"{pf.driver or 'no driver'} is not in sriov-node's driver table: its "
                     f"{', '.join(dict.fromkeys(unknown))} not known: tried at apply")
    return refused, notes


def _min_rates_before(pf_plan: "PfPlan") -> Dict[int, int]:
    """Each VF's min_tx_rate as the PF driver will hold it when the plan's VF settings are sent: none for
    VFs the plan makes anew (a new count goes through 0, and the driver forgets the old VFs' settings),
    else what was read (a VF whose settings were not read: 0)."""
    if any(isinstance(a, SetNumVfs) and a.value != a.current for a in pf_plan.actions):
        return {}
    return {vf.index: (vf.links.min_tx_rate or 0) if vf.links is not None else 0 for vf in pf_plan.target.pf.vfs}


def _driver_refusals(host: "Host", pf_plan: "PfPlan", name: str, vfs: List[int]) -> List[drivers.Refusal]:
    """A VF driver that cannot drive the PF's VFs (drivers.vf_driver_refusal): a device-specific driver
    whose ID table (modules.alias) has no entry matching the VFs' modalias, the one they have or, for VFs
    not made yet, the one they will have (the observation's `vf_default_drivers`: the drivers whose
    entries do match it). A driver no module provides is refused by its LoadDriver step, not here.
    Judged once per driver: every VF of a PF has the same IDs."""
    pf = pf_plan.target.pf
    if pf.bus != "pci" or pf.vf_default_drivers is None or name in pf.vf_default_drivers:
        return []
    aliases = host.modules.pci_aliases(name)
    if drivers.binds_by_id_table(name, aliases) is not True:
        return []
    from sriov_node.host.observe import pci_id

    vf = pf.vf(vfs[0])
    device = pci_id(host, vf.pci, "device") if vf is not None and vf.pci else pci_id(host, pf.pci, "sriov_vf_device")
    found = drivers.vf_driver_refusal(name, aliases, pf.vf_default_drivers,
                                      f"PCI {pf.vendor}:{device}" if pf.vendor and device else None)
    return [replace(found, vf=index) for index in vfs] if found else []


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _guid_keys(spec, action: SetVfGuids) -> Dict[int, List[Tuple[str, str]]]:
    """VF -> the GUID keys its group configures and their values, as the file has them: ("guid", "auto"),
    or ("node_guid", "..."), ("port_guid", "..."); for a VF its group gives none (a value to put back)
    the GUIDs the action sends."""
    sent: Dict[int, List[Tuple[str, str]]] = {}
    for vf, key, guid in action.values:
        sent.setdefault(vf, []).append((key, guid))
    out: Dict[int, List[Tuple[str, str]]] = {}
    for vf in sorted(sent):
        guids = spec.vf(vf).guids
        if guids is not None and guids.auto:
            out[vf] = [("guid", GUID_AUTO)]
        elif guids is not None and (guids.node_guid or guids.port_guid):
            out[vf] = [(key, getattr(guids, key)) for key in GUID_KEYS if getattr(guids, key)]
        else:
            out[vf] = sent[vf]
    return out


def _guid_refusals(spec, pf, action: SetVfGuids) -> List[drivers.Refusal]:
    """InfiniBand VF GUIDs: only through an InfiniBand PF's netdev (rtnetlink's handle_vf_guid refuses
    any other type, EOPNOTSUPP) whose driver has ndo_set_vf_guid (the driver table's `ib_guids`), and
    `guid = "auto"` needs the PF's own GUID to derive from. Each refusal names the key the file sets for
    the VF (guid, node_guid or port_guid) and its value."""
    row = drivers.driver(pf.driver)
    keys = _guid_keys(spec, action)

    def each(vfs, errno_name: str, why: str, fix: str, only: Optional[str] = None) -> List[drivers.Refusal]:
        return [drivers.Refusal(key, errno_name, why, fix, vf=vf, value=value)
                for vf in vfs for key, value in keys.get(vf, ()) if only is None or value == only]

    if pf.link_type != 32:
        kind = {1: "an Ethernet", None: "no"}.get(pf.link_type, f"a type {pf.link_type}")
        return each(keys, "EOPNOTSUPP", f"VF GUIDs are InfiniBand's, and PF {pf.label} has {kind} netdev "
                    f"(type {pf.link_type}; InfiniBand is 32)",
                    "drop guid/node_guid/port_guid from this PF's VF groups, or put the port in InfiniBand "
                    "mode (mstconfig LINK_TYPE_P1=1) and power cycle")
    if row is None or not row.ib_guids:
        return each(keys, "EOPNOTSUPP", f"{pf.driver or 'no driver'} has no ndo_set_vf_guid",
                    "drop guid/node_guid/port_guid (VF GUIDs need mlx5_core)")
    if pf.vf_guids_error:  # VFs there whose GUIDs neither netlink nor MLNX_OFED's sysfs reports
        unreadable = [vf.index for vf in pf.vfs if vf.index in keys and vf.links is not None
                      and vf.links.node_guid is None and vf.links.port_guid is None]
        if unreadable:
            return each(unreadable, "ENODATA", f"the VFs' GUIDs cannot be read back on PF {pf.label}: "
                        f"{pf.vf_guids_error}, so setting them could never be verified", GUIDS_UNREADABLE_FIX)
    if any(guid == GUID_AUTO for _, _, guid in action.values):
        return each(keys, "ENODEV", f"guid = \"auto\" derives from the PF's InfiniBand GUID, and "
                    f"PF {pf.label} has no RDMA device with a node GUID (<PF>/infiniband/*/node_guid)",
                    "load mlx5_ib (modprobe mlx5_ib), or give node_guid/port_guid per VF", only=GUID_AUTO)
    return []


def describe_refusals(pf_plan: "PfPlan", refused: List[drivers.Refusal]) -> List[str]:
    """One line per refusal, VFs alike folded into ranges, each naming the key and the fix."""
    spec, pf = pf_plan.target.spec, pf_plan.target.pf
    merged: Dict[Tuple[str, str, str, str, str], List[int]] = {}
    order: List[Tuple[str, str, str, str, str]] = []
    for r in refused:
        if r.vf is not None:
            where = spec.vf(r.vf).group or f"{spec.key}.vfs"
        elif r.key == "driver":
            where = next((g.key for g in spec.vfs if g.driver == r.value), spec.key)
        else:
            where = spec.key
        item = (f"{where}.{r.key}", repr(r.value) if isinstance(r.value, str) else str(r.value), r.why, r.errno, r.fix)
        if item not in merged:
            merged[item] = []
            order.append(item)
        if r.vf is not None:
            merged[item].append(r.vf)
    lines = []
    for key, value, why, code, fix in order:
        vfs = merged[(key, value, why, code, fix)]
        on = f"VF(s) {format_ranges(vfs)}: " if vfs else ""
        value = value.replace("'", '"')
        lines.append(f"PF {pf.label}: {on}{key} = {value}: {why} (it would fail: {code}). Fix: {fix}")
    return lines
