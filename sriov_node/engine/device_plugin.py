"""The SR-IOV device plugin's config.json, from the desired state and this host: what `export device-plugin`
prints and what a converged run writes to `[device_plugin] config_file`.

Each resource gets one selector object whose keys are ANDed by the plugin:

- `vendors`, `devices`: the VF's vendor and device ID as the host reports them (sriov_vf_device,
  or a present VF's own `device`), lower-case hex without 0x, as the plugin compares them;
- `drivers`: the one driver the config names for the resource's VFs;
- `pfNames`: one entry per PF, `NAME#RANGES`, every VF index of the resource on that PF merged
  into it (the plugin reads only the first entry naming a PF). A PF whose name the plugin could
  misread (no netdev, several netdevs such as switchdev representors, a '#' in the name, or a
  name equal to another PF's but for case) makes the resource use `rootDevices` with the PF PCI
  addresses instead, for all its PFs (pfNames and rootDevices in one object are ANDed).

pfNames and rootDevices only match devices that have a `physfn`, so a PF is never selected; the
VF index ranges leave out every VF of the PF that the resource does not name.

A group's resource options (one value per resource, config.py checks) become the plugin's:
`rdma = true` -> selector `isRdma` (pkg/netdevice: a VF is kept only when rdmamap finds an RDMA
device under it, /sys/bus/pci/devices/<VF>/infiniband/; its /dev/infiniband nodes are mounted): a
present VF bound as configured without one is refused (the pool would leave it out), one whose
netdev is in a pod's namespace is not judged (exclusive RDMA mode moves its RDMA device there too);
`vhost_net = true` -> `needVhostNet` (the plugin mounts /dev/vhost-net and /dev/net/tun where they
exist: a note when this host has no /dev/vhost-net); `exclude_topology = true` -> the resource's
`excludeTopology` (no NUMA node reported to kubelet's topology manager). `linkTypes` (pkg/devices
GenNetDevice: netlink's encapsulation type of the VF's netdev, else of its PF's) is written for an
InfiniBand resource, `["infiniband"]`, when each of its PFs has one netdev whose `type` reads 32
(ARPHRD_INFINIBAND): what IB consumers (ib-sriov-cni, the plugin's pKeys) expect; an Ethernet
resource gets none (the selectors are exact without it, and a PF whose netdev left the namespace
would read as no link type and empty the pool). A resource whose PFs are of two link types is
refused: one CNI serves one link type.

The plugin discovers a device by its PCI base class (pkg/types SupportedDevices): network controllers
(0x02) for `netDevice` resources, processing accelerators (0x12) for `accelerator` ones. A resource
whose VFs are of any other class (NVMe 0x0108, QAT 0x0b40, ...) would stay empty: refused, naming the
PF and its class. An accelerator resource (`deviceType: accelerator`) has no pfNames/rootDevices
(pkg/accelerator reads vendors, devices, drivers, pciAddresses) and its provider keeps PFs too, so its
selector names every VF by its PCI address: the VFs must be there (apply first).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from sriov_node.errors import EXIT_PF_FAILED, ConfigError, ConfigProblem, SriovNodeError
from sriov_node.host import Host
from sriov_node.model import DesiredState, PfState, VfGroup, format_ranges
from sriov_node.engine.resolve import Target

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.engine.survey import Survey



class ExportError(SriovNodeError):
    """The selectors cannot be made exact on this host (a block with a resource does not resolve here)."""

    exit_code = EXIT_PF_FAILED


NET_DEVICE, ACCELERATOR = "netDevice", "accelerator"
# the PCI base classes the plugin discovers, and the deviceType that does (pkg/types SupportedDevices;
# auxNetDevice is for subfunctions, not VFs)
DEVICE_TYPES = {0x02: NET_DEVICE, 0x12: ACCELERATOR}
_BASE_CLASSES = {
    0x00: "unclassified device", 0x01: "mass storage controller", 0x02: "network controller",
    0x03: "display controller", 0x04: "multimedia controller", 0x05: "memory controller", 0x06: "bridge",
    0x07: "communication controller", 0x08: "system peripheral", 0x09: "input device", 0x0B: "processor",
    0x0C: "serial bus controller", 0x0D: "wireless controller", 0x10: "encryption controller",
    0x11: "signal processing controller", 0x12: "processing accelerator",
}


def class_text(pci_class: int) -> str:
    """0x010802 -> '0x010802 (mass storage controller)'."""
    name = _BASE_CLASSES.get(pci_class >> 16)
    return f"0x{pci_class:06x}" + (f" ({name})" if name else "")


@dataclass(frozen=True)
class ResourceVfs:
    """What one exported resource stands for on this host."""

    name: str  # "intel.com/intel_sriov_netdevice"
    driver: str
    vfs: Tuple[Tuple[str, int, Optional[str]], ...]  # (PF PCI address, VF index, VF PCI address when present)
    device_type: str = NET_DEVICE


@dataclass(frozen=True)
class Export:
    config: Dict[str, Any]  # the config.json document
    resources: Tuple[ResourceVfs, ...]
    notes: Tuple[str, ...] = ()
    # What keeps the node from being converged (every block resolves, every PF as configured), read now
    differs: Tuple[str, ...] = ()

    def json_text(self) -> str:
        return json.dumps(self.config, indent=2) + "\n"


def _vf_ids(pf: PfState) -> Tuple[Optional[str], Optional[str]]:
    """(vendor, device) of the PF's VFs: a present VF's own IDs, else the PF's vendor and sriov_vf_device."""
    return _facts(pf).vf_ids or (pf.vendor, pf.vf_device)


def _facts(pf: PfState) -> PfState:
    """The PF, observed with what the plugin's selectors match (`Wanted.plugin`: the survey reads it for
    every block that names a resource); a PF read without it is a defect of the caller, never a guess."""
    if not pf.plugin_facts:
        raise ValueError(f"{pf.label} was observed without what the device plugin's selectors match")
    return pf


def _device_type(pf: PfState) -> Tuple[Optional[str], str]:
    """(the plugin's deviceType that discovers the PF's VFs, or None; why not, when None)."""
    pci_class = _facts(pf).vf_class
    if pci_class is None:
        return None, (f"the kernel shows no PCI class for {pf.label} or its VFs, and the device plugin discovers "
                      "devices by class")
    kind = DEVICE_TYPES.get(pci_class >> 16)
    if kind is None:
        return None, (f"the VFs of {pf.label} are PCI class {class_text(pci_class)} functions: "
                      "the SR-IOV device plugin discovers only network controllers (class 0x02, deviceType "
                      "netDevice) and processing accelerators (class 0x12, deviceType accelerator), so this resource "
                      "would stay empty")
    return kind, ""


# /sys/class/net/<netdev>/type (ARPHRD_*) -> netlink's EncapType string, as the plugin compares linkTypes
LINK_TYPES = {1: "ether", 32: "infiniband"}


def _link_type(pf: PfState) -> Optional[str]:
    """The PF's link type as the plugin names it, when the PF has exactly one netdev whose type is known."""
    if len(pf.netdevs) != 1:
        return None
    return LINK_TYPES.get(_facts(pf).link_type or 0)


def _without_rdma(pf: PfState, indices: Tuple[int, ...], driver: str) -> List[int]:
    """The VFs of `indices` that are there, bound to `driver`, and show no RDMA device (the plugin's
    isRdma: rdmamap lists /sys/bus/pci/devices/<VF>/infiniband/). A VF whose netdev is in another
    namespace is in a pod's hands (exclusive RDMA mode moved its RDMA device with it): not judged."""
    missing = []
    for i in indices:
        vf = pf.vf(i)
        if vf is None or not vf.pci or vf.driver != driver:
            continue
        if vf.rdma_devices is None:
            raise ValueError(f"VF {i} of {pf.label} was observed without its RDMA devices")
        if vf.rdma_devices or vf.netdev_elsewhere:
            continue  # an RDMA device, or its netdev went to a pod's namespace
        missing.append(i)
    return missing


def _name_is_exact(pf: PfState, names: List[str]) -> bool:
    """Whether `pfNames` can name this PF without doubt (the plugin compares names case-insensitively)."""
    if len(pf.netdevs) != 1 or "#" in pf.netdevs[0]:
        return False
    return sum(1 for n in names if n.casefold() == pf.netdevs[0].casefold()) == 1


def device_plugin_config(host: Host, desired: DesiredState, *, allow_empty: bool = False,
                         seen: Optional["Survey"] = None) -> Export:
    """The config.json whose selectors match exactly the VFs that the config gives a resource on this host.

    `seen`: the host as a run left it, read back (`Report.view`); else it is surveyed now.

    Raises ConfigError (exit 2) when no group names a resource (unless `allow_empty`: then an empty
    resourceList), ExportError (exit 1) when a block with a resource cannot be resolved on this host
    or a VF device ID cannot be known.
    """
    from sriov_node.engine.survey import survey

    names = desired.resources()
    if not names and not allow_empty:
        raise ConfigError(desired.source, [ConfigProblem("", "no [[pf.vfs]] group names a resource; add resource = "
                                                             "\"intel_sriov_netdevice\" (and a driver) to the groups "
                                                             "the device plugin should expose")])
    if seen is None:
        seen = survey(host, desired)
    heads, resolution = seen.heads, seen.resolution
    judged = seen.judged_by_pci()
    with_resources = {spec.key for spec in desired.pfs if any(g.resource for g in spec.vfs)}
    problems = [f"{desired.source}: {f.render()}; its VFs would be missing from the selectors"
                for f in resolution.failures if f.key in with_resources]
    host_names = [n for pf in heads.pfs for n in pf.netdevs]
    notes: List[str] = []
    differs = [f"{desired.source}: {f.render()}" for f in resolution.failures]
    for target in resolution.targets:
        findings = judged[target.pf.pci].findings
        if findings:
            differs.append(f"{target.pf.label}: {len(findings)} difference(s), e.g. {findings[0].describe()}")
    per_resource: Dict[str, List[Tuple[Target, Tuple[int, ...]]]] = {n: [] for n in names}
    ids: Dict[str, Tuple[Optional[str], Optional[str]]] = {}
    kinds: Dict[str, str] = {}  # PF PCI address -> deviceType
    for target in resolution.targets:
        spec, pf = target.spec, target.pf
        groups = [g for g in spec.vfs if g.resource]
        if not groups:
            continue
        if pf.bus != "pci":
            problems.append(f"{desired.source}: {spec.key}: {pf.label} is a {pf.bus} device: its VFs have no PCI "
                            "functions, and the device plugin exposes PCI devices only; drop resource there")
            continue
        kind, why = _device_type(pf)
        if kind is None:
            problems.append(f"{desired.source}: {spec.key}: {why}; drop resource = "
                            f"{', '.join(repr(n) for n in dict.fromkeys(g.resource for g in groups))} from this block")
            continue
        kinds[pf.pci] = kind
        vendor, device = ids[pf.pci] = _vf_ids(pf)
        if not vendor or not device:
            problems.append(f"{desired.source}: {spec.key}: cannot tell the VF device ID of {pf.label}: the kernel "
                            "shows no sriov_vf_device and the PF has no VFs yet; run sriov-node apply first")
            continue
        for name in dict.fromkeys(g.resource for g in groups):
            indices = tuple(sorted(i for g in groups if g.resource == name for i in g.indices))
            per_resource[name].append((target, indices))
            missing = [i for i in indices if kind == ACCELERATOR and not (pf.vf(i) and pf.vf(i).pci)]
            if missing:
                problems.append(f"{desired.source}: {spec.key}: resource {name!r} is an accelerator resource, "
                                "which the device plugin selects by VF PCI address, and VF(s) "
                                f"{format_ranges(missing)} of {pf.label} do not exist yet; run sriov-node apply first")
        findings = judged[pf.pci].findings
        if findings:
            notes.append(f"{pf.label} differs from the config ({len(findings)} difference(s), e.g. "
                         f"{findings[0].describe()}): the device plugin counts its VFs once they are as configured; "
                         "run sriov-node apply")
    options: Dict[str, VfGroup] = {}  # resource -> its first group (the options are one per resource)
    for spec in desired.pfs:
        for group in spec.vfs:
            if group.resource:
                options.setdefault(group.resource, group)
    link_types: Dict[str, Optional[str]] = {}  # resource -> the one link type of its PFs, when known for all
    for name in names:
        found = {kinds[t.pf.pci]: t.pf.label for t, _ in per_resource[name]}
        if len(found) > 1:
            problems.append(f"{desired.source}: resource {name!r} has both network VFs (of "
                            f"{found[NET_DEVICE]}) and accelerator VFs (of {found[ACCELERATOR]}): the device plugin "
                            "gives a resource one deviceType; give them different resource names")
            continue
        group = options.get(name)
        if group is None or not per_resource[name]:
            continue
        if found and ACCELERATOR in found and (group.rdma or group.vhost_net):
            flag = "rdma" if group.rdma else "vhost_net"
            problems.append(f"{desired.source}: {group.key}.{flag}: resource {name!r} is an accelerator resource "
                            f"(the VFs of {found[ACCELERATOR]}), and {flag} is a network device selector the "
                            f"plugin's accelerator resources do not read; drop {flag}")
            continue
        types = {t.pf.pci: _link_type(t.pf) for t, _ in per_resource[name]}
        by_type: Dict[str, str] = {}
        for t, _ in per_resource[name]:
            if types[t.pf.pci]:
                by_type.setdefault(str(types[t.pf.pci]), t.pf.label)
        if len(by_type) > 1:
            problems.append(f"{desired.source}: resource {name!r} has VFs of two link types: "
                            + " and ".join(f"{kind} (of {label})" for kind, label in sorted(by_type.items()))
                            + "; one CNI serves one link type (sriov-cni Ethernet, ib-sriov-cni InfiniBand): give "
                              "them different resource names")
            continue
        link_types[name] = next(iter(by_type)) if by_type and all(types.values()) else None
        if group.rdma:
            for t, indices in per_resource[name]:
                missing = _without_rdma(t.pf, indices, str(group.driver))
                if missing:
                    problems.append(f"{desired.source}: {group.key}.rdma: resource {name!r} has rdma = true, and "
                                    f"VF(s) {format_ranges(missing)} of {t.pf.label} (bound to {group.driver}) have "
                                    "no RDMA device (no <VF>/infiniband/): the device plugin's isRdma would leave "
                                    "them out of the pool; load the VFs' RDMA driver (mlx5_ib for mlx5_core; "
                                    "then rebind them: sriov-node apply) or drop rdma")
        if group.vhost_net and not seen.heads.vhost_net:
            notes.append(f"resource {name!r}: vhost_net = true, and this host has no /dev/vhost-net: the device "
                         "plugin mounts it (and /dev/net/tun) only where it exists; load it: modprobe vhost_net")
    if problems:
        raise ExportError("\n".join(problems))

    resource_list: List[Dict[str, Any]] = []
    exported: List[ResourceVfs] = []
    for name in names:
        entries = per_resource[name]
        if not entries:
            notes.append(f"resource {name!r}: no PF on this host has its VFs (fleet rules matching nothing); left out")
            continue
        driver = next(g.driver for t, _ in entries for g in t.spec.vfs if g.resource == name)
        kind = kinds[entries[0][0].pf.pci]
        selectors: Dict[str, Any] = {
            "vendors": sorted({ids[t.pf.pci][0] for t, _ in entries}),
            "devices": sorted({ids[t.pf.pci][1] for t, _ in entries}),
            "drivers": [driver],
        }
        resource: Dict[str, Any] = {"resourceName": name, "resourcePrefix": desired.resource_prefix}
        group = options[name]
        if group.exclude_topology:
            resource["excludeTopology"] = True
        if kind == ACCELERATOR:
            # pkg/accelerator: no pfNames/rootDevices, and PFs are candidates too: the VFs by address
            resource["deviceType"] = ACCELERATOR
            selectors["pciAddresses"] = [t.pf.vf(i).pci for t, indices in entries for i in indices]
        else:
            by_name = all(_name_is_exact(t.pf, host_names) for t, _ in entries)
            key = "pfNames" if by_name else "rootDevices"
            selectors[key] = [f"{t.pf.netdevs[0] if by_name else t.pf.pci}#{format_ranges(list(indices))}"
                              for t, indices in entries]
            if link_types.get(name) == "infiniband":
                selectors["linkTypes"] = ["infiniband"]
            if group.rdma:
                selectors["isRdma"] = True
            if group.vhost_net:
                selectors["needVhostNet"] = True
        resource["selectors"] = selectors
        resource_list.append(resource)
        vfs = []
        for t, indices in entries:
            for i in indices:
                vf = t.pf.vf(i)
                vfs.append((t.pf.pci, i, vf.pci if vf else None))
        exported.append(ResourceVfs(f"{desired.resource_prefix}/{name}", str(driver), tuple(vfs), kind))
    return Export({"resourceList": resource_list}, tuple(exported), tuple(notes), tuple(differs))


def config_file_path(host: Host, desired: Optional[DesiredState]) -> Optional[str]:
    """The config's [device_plugin] config_file under the host's root (None when it names none)."""
    if desired is None or desired.device_plugin_file is None:
        return None
    rel = desired.device_plugin_file.lstrip("/")
    return host.path(os.path.dirname(rel), os.path.basename(rel))


def write_config_file(host: Host, desired: DesiredState, seen: "Survey") -> Optional[str]:
    """After a run: write [device_plugin] config_file when the node is converged, read back (by the
    run: `seen`, its `Report.view`; nothing is read again).

    The device plugin reads its config once, at start, and advertises what it finds then: a file
    written before the VFs exist (or while they differ) would make it advertise VFs pods cannot
    get. So the file is written only when every block resolves and every PF is as configured,
    atomically (a reader sees the old file or the new one), and only when its bytes change (the
    plugin's pod restarts on a change). Returns a sentence for the run's notices (written, or why
    not), None when there is nothing to say (no config_file, or the file already says it).
    Raises OutputError when the file cannot be written.
    """
    from sriov_node.atomic import OutputError, write_atomic
    from sriov_node.files import read_regular

    path = config_file_path(host, desired)
    if path is None:
        return None
    try:
        export = device_plugin_config(host, desired, allow_empty=True, seen=seen)
    except ExportError as exc:
        return f"device plugin config {desired.device_plugin_file} not written: {str(exc).splitlines()[0]}"
    if export.differs:
        return (f"device plugin config {desired.device_plugin_file} not written: the node differs from the config "
                f"({export.differs[0]}); it is written once the node has converged")
    data = export.json_text().encode()
    try:
        if read_regular(path, limit=1 << 20, follow=False) == data:
            return None
    except OSError:
        pass  # absent (or not a regular file: replaced below)
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: cannot create its directory: {exc.strerror}")
    write_atomic(path, data, mode=0o644)
    return f"wrote the device plugin config to {desired.device_plugin_file} (the node has converged)"
