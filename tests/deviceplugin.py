"""A small reference matcher for the SR-IOV network device plugin's selectors (deviceType netDevice).

It follows the plugin's documented and coded semantics: discovery keeps PCI network devices
(class 0x02) that have a driver and are not PFs with VFs enabled; within one selector object every
non-empty key must accept (AND), within a key's list any entry (OR); vendors/devices/drivers are
exact, case-sensitive string matches; pfNames/rootDevices take the FIRST entry whose part before
'#' equals the VF's PF name/address case-insensitively, then its comma list of Go-Atoi indices and
inclusive ranges (the first unparsable item rejects), and never accept a device without a PF; the
first resource in config order claims a device; resourceName must match ^[a-zA-Z0-9_-]+$.
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
        ))
    return out


def is_candidate(d: Device) -> bool:
    if d.pci_class != 0x02:
        return False
    if d.sriov_capable and d.sriov_numvfs > 0:
        return False  # a PF with VFs enabled is never exposed
    return d.driver is not None  # an unbound device cannot be built


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


def selector_matches(sel: Dict[str, Any], d: Device) -> bool:
    s = _keys(sel)
    for key, value in (("vendors", d.vendor), ("devices", d.device), ("drivers", d.driver), ("pciaddresses", d.pci)):
        if s.get(key) and value not in s[key]:
            return False
    if s.get("pfnames") and not pf_entry_matches(s["pfnames"], d.pf_name, d.vf_index):
        return False
    if s.get("rootdevices") and not pf_entry_matches(s["rootdevices"], d.pf_pci, d.vf_index):
        return False
    return True


def match(config_json: str, devs: List[Device], default_prefix: str = "intel.com") -> Dict[str, List[str]]:
    """"prefix/name" -> the PCI addresses the plugin would put in that resource's pool."""
    doc = json.loads(config_json)
    claimed: set = set()
    pools: Dict[str, List[str]] = {}
    seen: set = set()
    for rc in doc["resourceList"]:
        rc = _keys(rc)
        assert (rc.get("devicetype") or "netDevice") == "netDevice"
        name = rc["resourcename"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", name), f"the plugin refuses resourceName {name!r}"
        full = f"{rc.get('resourceprefix') or default_prefix}/{name}"
        assert full not in seen, f"the plugin exits on a duplicate resource {full}"
        seen.add(full)
        raw = rc["selectors"]
        selectors = [raw] if isinstance(raw, dict) else list(raw)
        assert selectors and all(isinstance(s, dict) for s in selectors)
        pool = []
        for sel in selectors:
            for d in devs:
                if is_candidate(d) and d.pci not in claimed and selector_matches(sel, d):
                    claimed.add(d.pci)
                    pool.append(d.pci)
        if pool:
            pools[full] = sorted(pool)
    return pools
