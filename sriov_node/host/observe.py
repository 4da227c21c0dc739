"""A read-only snapshot of the kernel's SR-IOV state (live roots, simulated hosts and captured trees)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Collection, Dict, List, Mapping, Optional, Tuple

from sriov_node.host import Host
from sriov_node.host.paths import CLASS_NET, PCI_DEVICES, PCI_DRIVERS
from sriov_node.errors import errno_name
from sriov_node.model import HostState, PfSpec, PfState, VfLinks, VfState

_VIRTFN_RE = re.compile(r"^virtfn(\d+)$")
# a representor's phys_port_name (devlink's pfMvfN, pfMsfN, pfM, with cN for an external controller); in
# switchdev mode the representors are netdevs of the PF's own device, listed in its net/ beside the PF's
# (netdevsim, mlx5, ice), so the PF's name is the one that is not a representor's
_REPRESENTOR_PORT = re.compile(r"^(c\d+)?pf\d+((vf|sf)\d+)?$")


def pci_id(host: Host, pci: str, attr: str) -> Optional[str]:
    """A PCI ID attribute (vendor, device, sriov_vf_device) as lower-case hex without 0x: "8086", "154c"."""
    value = host.sysfs.read(PCI_DEVICES, pci, attr)
    if not value:
        return None
    value = value.strip().lower()
    return value[2:] if value.startswith("0x") else value


def _netdevs(host: Host, pci: str) -> Tuple[Tuple[str, ...], bool]:
    """(netdev names visible here, net/ exists but is empty)."""
    names = host.sysfs.listdir(PCI_DEVICES, pci, "net")
    if names:
        return tuple(sorted(names)), False
    return (), host.sysfs.isdir(PCI_DEVICES, pci, "net")


def _pf_netdevs(host: Host, names: Collection[str]) -> Tuple[str, ...]:
    """A PF device's netdevs, sorted, its switchdev representors after its own (the first is the PF's name)."""
    ordered = sorted(names)
    if len(ordered) < 2:
        return tuple(ordered)
    return tuple(sorted(ordered, key=lambda name: bool(
        _REPRESENTOR_PORT.match(host.sysfs.read(CLASS_NET, name, "phys_port_name") or ""))))


def pf_netdev(host: Host, pci: str) -> Tuple[Tuple[str, ...], Optional[int]]:
    """The PF's netdevs (its own first, as `_pf_netdevs`) and its own netdev's ifindex, read now."""
    return device_netdevs(host, host.sysfs.pf_dir(pci), pci, lambda names: _pf_netdevs(host, names))


def device_netdevs(host: Host, base: str, dev: str,
                   order: Optional[Callable[[Collection[str]], Tuple[str, ...]]] = None) -> Tuple[Tuple[str, ...], Optional[int]]:
    """A device's netdevs (sorted, or in `order`) and the first one's ifindex, read now through the
    device's own directory: a name there is always the device's, and a rename between the two reads
    (udev's, just after a probe: eth1 -> enp4s0) is seen and read again. The ifindex is None in a
    captured tree without `ifindex` files (requests then go by name)."""
    sysfs = host.sysfs
    netdevs: Tuple[str, ...] = ()
    for _ in range(3):
        names = sysfs.listdir(base, dev, "net")
        netdevs = order(names) if order is not None else tuple(sorted(names))
        if not netdevs:
            return (), None
        ifindex = sysfs.read_int(base, dev, "net", netdevs[0], "ifindex")
        if ifindex is not None or sysfs.exists(base, dev, "net", netdevs[0]):
            return netdevs, ifindex
    return netdevs, None


def _permanent_mac(host: Host, ifname: str) -> Optional[str]:
    """The MAC when sysfs says it is the permanent one (addr_assign_type 0 or absent), else netlink's."""
    assign = host.sysfs.read(CLASS_NET, ifname, "addr_assign_type")
    if assign in (None, "0"):
        mac = host.sysfs.read(CLASS_NET, ifname, "address")
        if mac:
            return mac.lower()
    # A random or set address: only the live kernel's IFLA_PERM_ADDRESS knows the permanent one.
    return host.links.permanent_mac(ifname)


def observe_vf(host: Host, index: int, pci: str, *, mtu: bool = False, detail: bool = True,
               rdma: bool = False) -> VfState:
    """A VF's driver and driver_override; with `detail` (or `mtu`), its netdevs and IOMMU group too;
    with `rdma`, its netdevs and RDMA devices (the device plugin's isRdma)."""
    driver, override = host.sysfs.vf_binding(pci)
    if not (detail or mtu or rdma):
        return VfState(index=index, pci=pci, driver=driver, driver_override=override)
    netdevs, elsewhere = _netdevs(host, pci)
    return VfState(
        index=index,
        pci=pci,
        driver=driver,
        driver_override=override,
        netdevs=netdevs,
        netdev_elsewhere=elsewhere and driver is not None,
        iommu_group=host.sysfs.iommu_group(pci) if detail or mtu else None,
        mtu=host.sysfs.read_int(CLASS_NET, netdevs[0], "mtu") if mtu and netdevs else None,
        rdma_devices=tuple(sorted(host.sysfs.listdir(PCI_DEVICES, pci, "infiniband"))) if rdma else None,
    )


def plugin_ids(host: Host, pf_pci: str, vfs: Tuple[VfState, ...]) -> Tuple[Optional[Tuple[str, str]], Optional[int]]:
    """What the device plugin's selectors match of a PF's VFs: a present VF's own (vendor, device), and
    the PCI class of a present VF, else the PF's (a VF has its PF's class); None where none reads."""
    ids = None
    for vf in vfs:
        vendor, device = pci_id(host, vf.pci, "vendor"), pci_id(host, vf.pci, "device")
        if vendor and device:
            ids = (vendor, device)
            break
    pci_class = None
    for pci in [vf.pci for vf in vfs] + [pf_pci]:
        try:
            pci_class = int(pci_id(host, pci, "class") or "", 16)
            break
        except ValueError:
            continue
    return ids, pci_class


def _vf_links(host: Host, pci: str, known: Optional[Mapping[int, str]] = None) -> Tuple[List[Tuple[int, str]], List[int]]:
    """([(index, address)] of each VF the PF's virtfnN links lead to now, [index of each virtfnN
    that leads to no VF of this PF]). `known`: addresses read earlier in this run.

    A VF removed by hand (echo 1 > remove) leaves its virtfnN link dangling; a link may also lead
    to something that is no VF of this PF. Neither is a VF: each is one that is missing, and its
    stale link is what the kernel refuses to create again. One readlink per VF tells: the VF's
    physfn, reached through virtfnN, names this PF."""
    found, stale = [], []
    sysfs = host.sysfs
    for entry in sysfs.listdir(PCI_DEVICES, pci):
        m = _VIRTFN_RE.match(entry)
        if not m:
            continue
        index = int(m.group(1))
        vf_pci = (known.get(index) if known else None) or sysfs.vf_address(pci, index)
        back = sysfs.link_name(PCI_DEVICES, pci, entry, "physfn")
        if back is None and sysfs.isdir(PCI_DEVICES, pci, entry, "physfn"):
            back = pci  # a capture made with dereferenced links: physfn is a directory
        if vf_pci and back == pci:
            found.append((index, vf_pci))
        else:
            stale.append(index)
    return sorted(found), sorted(stale)


def default_driver_of(host: Host, vf_pci: str) -> Optional[str]:
    """The driver the kernel would pick for this device by its IDs (modules.alias), if known."""
    modalias = host.sysfs.read(PCI_DEVICES, vf_pci, "modalias")
    return host.modules.default_driver(modalias, pci_id(host, vf_pci, "vendor"), pci_id(host, vf_pci, "device"))


def default_drivers_of(host: Host, vf_pci: str) -> Optional[Tuple[str, ...]]:
    """The driver names the kernel's ID tables give this device (modules.alias), () none, None unknown.

    modules.alias names modules; a loaded module lists the drivers it registered
    (/sys/module/<module>/drivers/pci:<driver>), else the module's name stands for its driver.
    """
    modalias = host.sysfs.read(PCI_DEVICES, vf_pci, "modalias")
    return _driver_names(host, host.modules.default_drivers(modalias, pci_id(host, vf_pci, "vendor"),
                                                            pci_id(host, vf_pci, "device")))


def _driver_names(host: Host, modules: Optional[Tuple[str, ...]]) -> Optional[Tuple[str, ...]]:
    """The drivers these modules register (a loaded module's /sys/module/<module>/drivers/pci:<driver>),
    else the modules' own names."""
    if modules is None:
        return None
    names: List[str] = []
    for module in modules:
        registered = [n[4:] for n in host.sysfs.listdir("sys/module", module.replace("-", "_"), "drivers")
                      if n.startswith("pci:")]
        for name in registered or [module]:
            if name not in names:
                names.append(name)
    return tuple(names)


def future_default_drivers(host: Host, pf_pci: str) -> Optional[Tuple[str, ...]]:
    """What `default_drivers_of` will say of the PF's VFs once they exist (None: not known): their
    modalias is the PF's with the VF device ID (`sriov_vf_device`) in place of the PF's; the VF
    drivers' ID tables match on vendor and device (their subsystem, class: any)."""
    ids = {name: pci_id(host, pf_pci, name) for name in
           ("vendor", "sriov_vf_device", "subsystem_vendor", "subsystem_device", "class")}
    try:
        vendor, device = int(ids["vendor"] or "", 16), int(ids["sriov_vf_device"] or "", 16)
        sub_vendor, sub_device = int(ids["subsystem_vendor"] or "0", 16), int(ids["subsystem_device"] or "0", 16)
        klass = int(ids["class"] or "0", 16)
    except ValueError:
        return None
    modalias = (f"pci:v{vendor:08X}d{device:08X}sv{sub_vendor:08X}sd{sub_device:08X}"
                f"bc{klass >> 16 & 0xff:02X}sc{klass >> 8 & 0xff:02X}i{klass & 0xff:02X}")
    return _driver_names(host, host.modules.default_drivers(modalias, ids["vendor"], ids["sriov_vf_device"]))


@dataclass(frozen=True)
class Wanted:
    """What a PF's observation must include beyond its PCI state (only what the comparison needs)."""

    vfs: bool = True
    macs: bool = False
    links: bool = False  # VF settings: one RTM_GETLINK (imports pyroute2)
    eswitch: bool = False  # devlink
    vf_mtu: bool = False
    # Read VF settings only when sriov_numvfs reads this (else the VFs are made anew: every setting
    # is sent, none compared); None: always
    links_at_count: Optional[int] = None
    vf_detail: bool = True  # each VF's netdevs and IOMMU group (status; not what the comparison needs)
    guids: bool = False  # InfiniBand VF GUIDs: the PF's link type and GUID (the VFs' come with `links`)
    plugin: bool = False  # what the device plugin's selectors match: VF IDs and class, the PF's link type
    vf_rdma: bool = False  # each VF's RDMA devices (isRdma)

    @classmethod
    def for_spec(cls, spec: PfSpec, macs: bool = False, detail: bool = False) -> "Wanted":
        return cls(True, macs, spec.wants_vf_links or spec.wants_guids, spec.eswitch_mode is not None,
                   spec.wants_vf_mtu, None if spec.externally_managed else spec.num_vfs, detail, spec.wants_guids,
                   spec.wants_plugin_facts, spec.wants_vf_rdma)


def ib_guid(host: Host, pci: str) -> Optional[str]:
    """The node GUID of the PF's RDMA device (<PF>/infiniband/<dev>/node_guid, "0c42:a103:0012:3456"),
    as "0c:42:a1:03:00:12:34:56"; None without one."""
    for name in sorted(host.sysfs.listdir(PCI_DEVICES, pci, "infiniband")):
        text = host.sysfs.read(PCI_DEVICES, pci, "infiniband", name, "node_guid")
        raw = (text or "").strip().replace(":", "").lower()
        if len(raw) == 16 and all(c in "0123456789abcdef" for c in raw) and int(raw, 16):
            return ":".join(raw[i:i + 2] for i in range(0, 16, 2))
    return None


_GUID_TEXT = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){7}\Z")
# why a VF's GUIDs cannot be read back (PfState.vf_guids_error)
GUIDS_UNREPORTED = ("neither netlink's VF info (IFLA_VF_IB_NODE_GUID/PORT_GUID: Linux 5.5+) nor MLNX_OFED's "
                    "sysfs (<PF>/sriov/<N>/node, port) reports them")


def ofed_vf_guids(host: Host, pci: str, index: int) -> Dict[str, str]:
    """VF `index`'s GUIDs as MLNX_OFED's mlx5_core shows them (sriov_sysfs.c, vf_ib_attrs): the files
    <PF>/sriov/<N>/node and port, "%02x:%02x:...:%02x\\n", most significant byte first (the same
    files as /sys/class/infiniband/<dev>/device/sriov/<N>/, `device` being the PF). {} where the
    driver has none (upstream mlx5_core) or a read fails (the firmware query behind it)."""
    out = {}
    for key, name in (("node_guid", "node"), ("port_guid", "port")):
        text = (host.sysfs.read(PCI_DEVICES, pci, "sriov", str(index), name) or "").strip().lower()
        if _GUID_TEXT.match(text):
            out[key] = text
    return out


def _with_ofed_guids(host: Host, pci: str, links: Dict[int, VfLinks],
                     indices: Collection[int]) -> Tuple[Dict[int, VfLinks], Optional[str], Optional[str]]:
    """The VFs' GUIDs where netlink did not report them, from MLNX_OFED's sysfs files: (links, where
    they were read from, why some VF's could not be read: those VFs keep None)."""
    sources = set()
    missing = []
    for index in sorted(indices):
        mine = links.get(index)
        if mine is None:
            continue  # the VF's netlink info was not read at all: links_error says why
        if mine.node_guid is not None or mine.port_guid is not None:
            sources.add("netlink")
            continue
        found = ofed_vf_guids(host, pci, index)
        if found:
            links = {**links, index: replace(mine, **found)}
            sources.add("sysfs")
        else:
            missing.append(index)
    error = GUIDS_UNREPORTED if missing else None
    return links, "+".join(sorted(sources)) or None, error


def _read_links(host: Host, pf: str, netdevs: Tuple[str, ...],
                ifindex: Optional[int]) -> Tuple[Dict[int, VfLinks], Optional[str]]:
    if not netdevs:
        return {}, "the PF has no netdev (is its driver bound?)"
    try:
        return host.links.vf_links(netdevs[0], ifindex=ifindex), None
    except OSError as exc:
        return {}, f"{errno_name(exc.errno)}: {exc.strerror or exc}"


def observe_pf(host: Host, pci: str, *, with_vfs: bool = True, macs: bool = False,
               want: Optional[Wanted] = None, known_vfs: Optional[Mapping[int, str]] = None) -> PfState:
    """The PF; its VFs too unless `with_vfs` is False (resolution needs only the PF). `known_vfs`:
    VF addresses this run has read already (the executor's), as {index: PCI address}."""
    want = want or Wanted(vfs=with_vfs, macs=macs)
    sysfs = host.sysfs
    bus = sysfs.pf_bus(pci)
    netdevs, ifindex = pf_netdev(host, pci)
    num_vfs = sysfs.num_vfs(pci)
    vfs: Tuple[VfState, ...] = ()
    stale: List[int] = []
    default = None
    defaults: Optional[Tuple[str, ...]] = None
    links: Dict[int, VfLinks] = {}
    links_error = None
    guids_from: Optional[str] = None
    guids_error: Optional[str] = None
    read_links = want.links and (want.links_at_count is None or (num_vfs or 0) == want.links_at_count)
    if read_links:
        links, links_error = _read_links(host, pci, netdevs, ifindex)
    if want.vfs:
        if bus == "pci":
            present, stale = _vf_links(host, pci, known_vfs)
            vfs = tuple(observe_vf(host, index, vf_pci, mtu=want.vf_mtu, detail=want.vf_detail, rdma=want.vf_rdma)
                        for index, vf_pci in present)
            if vfs:  # which driver the kernel picks for them: what "the default driver" is judged against
                defaults = default_drivers_of(host, vfs[0].pci)
                default = defaults[0] if defaults else None
            else:  # none yet: the VFs to come, by the modalias they will have
                defaults = future_default_drivers(host, pci)
                default = defaults[0] if defaults else None
        else:  # netdevsim: VFs are indices on the PF, with no PCI function, driver or netdev
            vfs = tuple(VfState(i, f"{pci}-vf{i}", None, None) for i in range(num_vfs or 0))
        if read_links:
            if want.guids:  # netlink's VF info first; MLNX_OFED's sysfs files where it reports none
                links, guids_from, guids_error = _with_ofed_guids(host, pci, links, [vf.index for vf in vfs])
            vfs = tuple(replace(vf, links=links.get(vf.index)) for vf in vfs)
    eswitch, eswitch_error = None, None
    if want.eswitch:
        try:
            eswitch = host.devlink.eswitch_mode(f"{bus}/{pci}")
        except OSError as exc:
            eswitch_error = f"{errno_name(exc.errno)}: {exc.strerror or exc}"
    pcifn = bus == "pci"
    vf_ids, vf_class = plugin_ids(host, pci, vfs) if want.plugin and pcifn else (None, None)
    return PfState(
        pci=pci,
        vendor=pci_id(host, pci, "vendor") if pcifn else None,
        device=pci_id(host, pci, "device") if pcifn else None,
        driver=sysfs.pf_driver(pci),
        netdevs=netdevs,
        mac=_permanent_mac(host, netdevs[0]) if want.macs and netdevs else None,
        total_vfs=sysfs.total_vfs(pci),
        num_vfs=num_vfs,
        autoprobe=sysfs.autoprobe(pci) if pcifn else None,
        vf_device=pci_id(host, pci, "sriov_vf_device") if pcifn else None,
        vfs=vfs,
        vfs_observed=want.vfs,
        vf_default_driver=default,
        vf_default_drivers=defaults,
        stale_virtfns=tuple(stale),
        bus=bus,
        mtu=sysfs.read_int(CLASS_NET, netdevs[0], "mtu") if netdevs else None,
        eswitch_mode=eswitch,
        links_error=links_error,
        eswitch_error=eswitch_error,
        link_type=sysfs.read_int(CLASS_NET, netdevs[0], "type") if (want.guids or want.plugin) and netdevs else None,
        ib_guid=ib_guid(host, pci) if want.guids and pcifn else None,
        vf_guids_from=guids_from,
        vf_guids_error=guids_error,
        plugin_facts=want.plugin,
        vf_ids=vf_ids,
        vf_class=vf_class,
    )


def _physfn(host: Host, pci: str) -> Optional[str]:
    try:
        return host.sysfs.link_name(PCI_DEVICES, pci, "physfn")
    except ValueError:
        return None


def netdev_owners(host: Host, ifnames: Collection[str]) -> Dict[str, str]:
    """netdev name -> the device that owns it, for the names asked about (selectors, messages)."""
    owners: Dict[str, str] = {}
    for ifname in ifnames:
        try:
            owner = host.sysfs.link_name(CLASS_NET, ifname, "device")
        except ValueError:
            owner = None
        if owner:
            owners[ifname] = owner
    return owners


def observe(host: Host, *, vfs_of: Optional[Collection[str]] = None, macs: bool = False,
            ifnames: Collection[str] = (), devices: Collection[str] = (), vhost_net: bool = False,
            pfs_of: Optional[Collection[str]] = None) -> HostState:
    """Every SR-IOV PF (a PCI function with sriov_totalvfs); VFs only of the PFs in `vfs_of` (None: all).

    `macs`: read each PF's permanent MAC (only MAC selectors need it); `ifnames`: netdevs whose
    owning device the caller wants to know, `devices`: PCI functions whose PF (if they are VFs)
    it wants to know — both for selectors that match no PF. `vhost_net`: whether /dev/vhost-net
    exists (a device plugin resource asks needVhostNet).

    `pfs_of`: only these devices are read as PFs (those of them that are SR-IOV PFs), none of the
    host's other PFs: what a run of some PFs needs when nothing it decides depends on the others
    (`engine/survey.py`, `narrowed`). Every PCI function is still listed (`pci_devices`).
    """
    pci_devices = sorted(host.sysfs.listdir(PCI_DEVICES))
    listed = pci_devices if pfs_of is None else sorted(p for p in set(pfs_of) if host.sysfs.is_pci(p))
    pfs: Tuple[PfState, ...] = tuple(
        observe_pf(host, pci, with_vfs=vfs_of is None or pci in vfs_of, macs=macs)
        for pci in listed
        if host.sysfs.is_sriov_pf(pci)
    )
    owners = netdev_owners(host, ifnames)
    # netdevsim devices selected by name: SR-IOV without PCI (sriov_numvfs on the bus device)
    pfs += tuple(observe_pf(host, dev, with_vfs=vfs_of is None or dev in vfs_of, macs=macs)
                 for dev in sorted(set(owners.values()))
                 if not host.sysfs.is_pci(dev) and (pfs_of is None or dev in pfs_of) and host.sysfs.is_sriov_pf(dev))
    asked = set(devices) | set(owners.values())
    physfn = {pci: pf for pci in asked for pf in [_physfn(host, pci)] if pf}
    return HostState(
        pfs=pfs,
        pci_devices=frozenset(pci_devices),
        netdev_owners=owners,
        physfn=physfn,
        pci_drivers=frozenset(host.sysfs.listdir(PCI_DRIVERS)),
        iommu_groups=bool(host.sysfs.listdir("sys/kernel/iommu_groups")),
        altname_reader=host.links.altnames,  # asked only when a selector names an altname
        vhost_net=host.sysfs.exists("dev", "vhost-net") if vhost_net else None,
    )
