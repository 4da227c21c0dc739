"""A small reference matcher for the SR-IOV network device plugin's selectors (deviceTypes netDevice and accelerator).

It follows the plugin's code (k8snetworkplumbingwg/sriov-network-device-plugin): discovery keeps PCI
functions by base class (pkg/types SupportedDevices): network controllers (0x02) for netDevice, with
a driver and not PFs with VFs enabled (pkg/netdevice AddTargetDevices), and processing accelerators
(0x12) for accelerator, with a driver, PFs included (pkg/accelerator AddTargetDevices); an
accelerator selector reads only vendors, devices, drivers and pciAddresses (AccelDeviceSelectors:
Go's decoder drops any other key, pfNames included); within one selector object every
non-empty key must accept (AND), within a key's list any entry (OR); vendors/devices/drivers are
exact, case-sensitive string matches; pfNames/rootDevices take the FIRST entry whose part before
'#' equals the VF's PF name/address case-insensitively, then its comma list of Go-Atoi indices and
inclusive ranges (the first unparsable item rejects), and never accept a device without a PF; the
first resource in config order claims a device; resourceName must match ^[a-zA-Z0-9_-]+$.

The netDevice selectors beyond those: `linkTypes` compares exactly with the device's link type, netlink's
EncapType of the VF's first netdev, else of its PF's (pkg/devices GenNetDevice; "" when neither has one);
`isRdma` keeps only devices rdmamap finds an RDMA device for (/sys/bus/pci/devices/<VF>/infiniband/
not empty; the plugin's fallback, devlink's enable_rdma param, is for VFs already in a pod);
`needVhostNet` filters nothing (it mounts /dev/vhost-net and /dev/net/tun); the resource's
`excludeTopology` changes what is reported, not the pool. Booleans must be JSON booleans and lists
lists (Go's decoder refuses the config otherwise).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

PCI = "sys/bus/pci/devices"
_ATOI = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class Device:
    pci: str
    vendor: str
    device: str
    driver: Optional[str]
    pf_name: str
    pf_pci: str
    vf_index: int
    pci_class: int
    sriov_capable: bool
    sriov_numvfs: int
    link_type: str = ""  # "ether", "infiniband", "" (no netdev to ask)
    rdma: bool = False  # an RDMA device under it


ENCAP_TYPES = {"1": "ether", "32": "infiniband"}  # vishvananda/netlink encapTypeToString (ARPHRD_*)


def _link_type(root: str, vf_pci: str, pf_name: str) -> str:
    vf_net = os.path.join(root, PCI, vf_pci, "net")
    names = sorted(os.listdir(vf_net)) if os.path.isdir(vf_net) else []
    ifname = names[0] if names else pf_name
    if not ifname:
        return ""
    number = _read(root, "sys/class/net", ifname, "type") or ""
    return ENCAP_TYPES.get(number, "unknown")


def _read(root: str, *parts: str) -> Optional[str]:
    try:
        with open(os.path.join(root, *parts)) as fh:
            return fh.read().strip()
    except OSError:
        return None


def _link(root: str, *parts: str) -> Optional[str]:
    try:
        return os.path.basename(os.readlink(os.path.join(root, *parts)).rstrip("/"))
    except OSError:
        return None


def _hex(text: Optional[str]) -> str:
    text = (text or "").lower()
    return text[2:] if text.startswith("0x") else text


def devices(root: str) -> List[Device]:
    """Every PCI function of a host tree, with the attributes the plugin reads."""
    out = []
    for pci in sorted(os.listdir(os.path.join(root, PCI))):
        pf_pci = _link(root, PCI, pci, "physfn") or ""
        pf_name, index = "", -1
        if pf_pci:
            names = sorted(os.listdir(os.path.join(root, PCI, pf_pci, "net"))) \
                if os.path.isdir(os.path.join(root, PCI, pf_pci, "net")) else []
            pf_name = names[0] if names else ""
            for entry in os.listdir(os.path.join(root, PCI, pf_pci)):
                if entry.startswith("virtfn") and _link(root, PCI, pf_pci, entry) == pci:
                    index = int(entry[len("virtfn"):])
        out.append(Device(
            pci=pci,
            vendor=_hex(_read(root, PCI, pci, "vendor")),
            device=_hex(_read(root, PCI, pci, "device")),
            driver=_link(root, PCI, pci, "driver"),
            pf_name=pf_name,
            pf_pci=pf_pci,
            vf_index=index,
            pci_class=int(_read(root, PCI, pci, "class") or "0", 16) >> 16,
            sriov_capable=_read(root, PCI, pci, "sriov_totalvfs") is not None,
            sriov_numvfs=int(_read(root, PCI, pci, "sriov_numvfs") or "0"),
            link_type=_link_type(root, pci, pf_name),
            rdma=bool(os.path.isdir(os.path.join(root, PCI, pci, "infiniband"))
                      and os.listdir(os.path.join(root, PCI, pci, "infiniband"))),
        ))
    return out


DEVICE_CLASSES = {"netDevice": 0x02, "accelerator": 0x12}  # pkg/types SupportedDevices (auxNetDevice: not VFs)
_KEYS = {
    "netDevice": ("vendors", "devices", "drivers", "pciaddresses", "pfnames", "rootdevices", "linktypes", "isrdma",
                  "needvhostnet"),
    "accelerator": ("vendors", "devices", "drivers", "pciaddresses"),
}


def is_candidate(d: Device, device_type: str = "netDevice") -> bool:
    if d.pci_class != DEVICE_CLASSES[device_type]:
        return False
    if device_type == "netDevice" and d.sriov_capable and d.sriov_numvfs > 0:
        return False  # a network PF with VFs enabled is never exposed (an accelerator PF is)
    return d.driver is not None  # an unbound device cannot be built (GetDriverName fails)


def _atoi(text: str) -> Optional[int]:
    return int(text) if _ATOI.match(text) else None


def pf_entry_matches(entries: List[str], key: str, index: int) -> bool:
    if key == "":
        return False
    entry = next((e for e in entries if e.split("#")[0].casefold() == key.casefold()), None)
    if entry is None:
        return False
    if "#" not in entry:
        return True
    parts = entry.split("#")
    if len(parts) != 2:
        return False
    for item in parts[1].split(","):
        if "-" in item:
            ends = item.split("-")
            if len(ends) != 2:
                return False
            lo, hi = _atoi(ends[0]), _atoi(ends[1])
            if lo is None or hi is None:
                return False
            if lo <= index <= hi:
                return True
        else:
            n = _atoi(item)
            if n is None:
                return False
            if n == index:
                return True
    return False


def _keys(obj: Dict[str, Any]) -> Dict[str, Any]:
    return {k.lower(): v for k, v in obj.items()}  # Go's encoding/json matches keys case-insensitively


def selector_matches(sel: Dict[str, Any], d: Device, device_type: str = "netDevice") -> bool:
    s = {k: v for k, v in _keys(sel).items() if k in _KEYS[device_type]}
    for key, value in (("vendors", d.vendor), ("devices", d.device), ("drivers", d.driver), ("pciaddresses", d.pci)):
        if s.get(key) and value not in s[key]:
            return False
    if s.get("pfnames") and not pf_entry_matches(s["pfnames"], d.pf_name, d.vf_index):
        return False
    if s.get("rootdevices") and not pf_entry_matches(s["rootdevices"], d.pf_pci, d.vf_index):
        return False
    if s.get("linktypes") and d.link_type not in s["linktypes"]:
        return False
    if s.get("isrdma") and not d.rdma:
        return False
    return True


def _check_types(rc: Dict[str, Any], selectors: List[Dict[str, Any]]) -> None:
    """What Go's decoder refuses (a bool as a string, a list as a string): the plugin would not start."""
    assert isinstance(rc.get("excludetopology", False), bool), "excludeTopology must be a JSON boolean"
    for sel in selectors:
        for key, value in _keys(sel).items():
            if key in ("isrdma", "needvhostnet"):
                assert isinstance(value, bool), f"{key} must be a JSON boolean"
            else:
                assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{key} must be strings"


def match(config_json: str, devs: List[Device], default_prefix: str = "intel.com") -> Dict[str, List[str]]:
    """"prefix/name" -> the PCI addresses the plugin would put in that resource's pool."""
    doc = json.loads(config_json)
    claimed: set = set()
    pools: Dict[str, List[str]] = {}
    seen: set = set()
    for rc in doc["resourceList"]:
        rc = _keys(rc)
        device_type = rc.get("devicetype") or "netDevice"
        assert device_type in DEVICE_CLASSES, f"the plugin refuses deviceType {device_type!r}"
        name = rc["resourcename"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", name), f"the plugin refuses resourceName {name!r}"
        full = f"{rc.get('resourceprefix') or default_prefix}/{name}"
        assert full not in seen, f"the plugin exits on a duplicate resource {full}"
        seen.add(full)
        raw = rc["selectors"]
        selectors = [raw] if isinstance(raw, dict) else list(raw)
        assert selectors and all(isinstance(s, dict) for s in selectors)
        _check_types(rc, selectors)
        pool = []
        for sel in selectors:
            for d in devs:
                if is_candidate(d, device_type) and d.pci not in claimed and selector_matches(sel, d, device_type):
                    claimed.add(d.pci)
                    pool.append(d.pci)
        if pool:
            pools[full] = sorted(pool)
    return pools
