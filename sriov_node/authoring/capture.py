"""`sriov-node capture`: the host's SR-IOV layout as it is now, written as a valid, commented config.

For people moving from `echo N > sriov_numvfs` scripts: every PF with VFs (or each PF asked for,
by PCI address, netdev name or alternative name: `pfs`) gets a block (selecting it by PCI address,
by name, or by its first alternative name) with its `num_vfs`; VFs are collapsed into range groups by what the
kernel shows for them:

- a VF bound to the driver its driver_override names gets `driver = "<that driver>"`;
- a VF unbound with driver_override "none" gets `driver = "none"`;
- a VF bound, without an override, to the kernel's default driver for it gets no driver key (the
  default), unless the PF's sriov_drivers_autoprobe is 0;
- anything else (bound by hand to another driver, unbound without an override, an override that
  differs from the bound driver) gets `driver = "any"` with a comment saying what to write to pin
  it: `any` leaves it exactly as it is;
- VF settings read through the PF's netdev (one RTM_GETLINK) that differ from the kernel's
  defaults: MAC (one VF per group), VLAN, QoS and protocol, spoof checking off, trust on, link
  state, tx rates. The eswitch mode is kept when it is switchdev, sriov_drivers_autoprobe when 0;
- InfiniBand VF GUIDs the PF's driver reports as set (mlx5 reports 0 for none): `guid = "auto"`
  where both are what the rule derives from the PF's GUID, else the VF's own `node_guid` and
  `port_guid` (one VF per group).

`apply` of the result plans nothing on the same host: every value in it is the value observed (the
`driver` key is `compare.driver_key`, the inverse of the comparison of VF drivers).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from sriov_node.config import parse_config
from sriov_node.errors import SriovNodeError, UsageError
from sriov_node.host import Host
from sriov_node.host.observe import Wanted, observe, observe_pf
from sriov_node.engine.compare import driver_key
from sriov_node.model import GUID_AUTO, GUID_KEYS, GuidSpec, HostState, PfState, VfLinks, format_ranges

ZERO_MAC = "00:00:00:00:00:00"
ZERO_GUID = "00:00:00:00:00:00:00:00"
COMMENT_COLUMN = 28


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)  # a TOML basic string for what we write (names, addresses, drivers)


def _line(indent: str, key: str, value: Any, comment: Optional[str] = None) -> str:
    text = f"{indent}{key} = {_value(value)}"
    if comment:
        text = f"{text:<{COMMENT_COLUMN - 1}} # {comment}"
    return text + "\n"


def vf_settings(links: Optional[VfLinks]) -> Tuple[Tuple[str, Any], ...]:
    """The settings that differ from a freshly created VF's, as config keys in the config's order."""
    if links is None:
        return ()
    out: List[Tuple[str, Any]] = []
    if links.mac and links.mac != ZERO_MAC and not int(links.mac[:2], 16) & 1:
        out.append(("mac", links.mac))
    if links.vlan or links.qos:
        out.append(("vlan", links.vlan or 0))
        if links.qos:
            out.append(("qos", links.qos))
        if links.vlan and links.vlan_proto and links.vlan_proto != "802.1Q":
            out.append(("vlan_proto", links.vlan_proto))
    if links.spoofchk is False:
        out.append(("spoofchk", False))
    if links.trust is True:
        out.append(("trust", True))
    if links.link_state not in (None, "auto"):
        out.append(("link_state", links.link_state))
    for rate in ("min_tx_rate", "max_tx_rate"):
        if getattr(links, rate):
            out.append((rate, getattr(links, rate)))
    return tuple(out)


def vf_guids(index: int, links: Optional[VfLinks], pf_guid: Optional[str]) -> Tuple[Tuple[str, Any], ...]:
    """The InfiniBand GUIDs a VF has been given, as config keys: `guid = "auto"` when both are the
    derived ones, else the set ones as they are; nothing for GUIDs never set (reported as 0) or not reported."""
    if links is None:
        return ()
    have = {k: getattr(links, k) for k in GUID_KEYS if getattr(links, k) not in (None, ZERO_GUID)}
    if not have:
        return ()
    if have == GuidSpec(auto=True).wanted(index, pf_guid):  # what `guid = "auto"` asks of this VF
        return (("guid", GUID_AUTO),)
    return tuple((k, have[k]) for k in GUID_KEYS if k in have)


def _own_addresses(pf: PfState, index: int, settings: Tuple[Tuple[str, Any], ...], taken: Dict[Tuple[str, str], str],
                   notes: List[str]) -> Tuple[Tuple[str, Any], ...]:
    """A VF's settings without a MAC or given GUID another VF captured already has (a config gives one
    VF's address to one VF: the kernel may show two sharing one, set by hand); each left out is said."""
    kept = []
    for key, value in settings:
        if key in ("mac",) + GUID_KEYS:
            first = taken.setdefault((key, str(value).lower()), f"{pf.label} VF {index}")
            if first != f"{pf.label} VF {index}":
                notes.append(f"VF {index}: {key} {value} not captured: {first} has it too, and a {key} is one "
                             "VF's (give this one its own)")
                continue
        kept.append((key, value))
    return tuple(kept)


def _pf_block(pf: PfState, by: str, altnames: Optional[Tuple[str, ...]] = None,
              taken: Optional[Dict[Tuple[str, str], str]] = None) -> List[str]:
    """One PF's block, from its observation with VF settings and eswitch mode (`_observe`); `taken`:
    the VF addresses (MAC, given GUIDs) the blocks before it captured, and whose."""
    taken = {} if taken is None else taken
    notes: List[str] = []
    links_note = None
    if not pf.netdevs:
        links_note = "VF settings not read: the PF has no netdev"
    elif pf.links_error:
        links_note = f"VF settings not read ({pf.links_error}): only drivers are captured"
    eswitch = pf.eswitch_mode
    default = pf.vf_default_driver

    groups: Dict[Tuple[Any, ...], List[int]] = {}
    for vf in pf.vfs:
        if vf.index >= (pf.num_vfs or 0):
            continue
        driver, comment = driver_key(vf, default, pf.autoprobe)
        settings = _own_addresses(pf, vf.index, vf_settings(vf.links) + vf_guids(vf.index, vf.links, pf.ib_guid),
                                  taken, notes)
        if driver is None and not settings:
            continue  # the kernel's default, nothing set: what a VF no group names gets
        key: Tuple[Any, ...] = (driver, comment, settings)
        if any(k in ("mac",) + GUID_KEYS for k, _ in settings):
            key += (vf.index,)  # a MAC, a given GUID: one VF's
        groups.setdefault(key, []).append(vf.index)

    title = f"{pf.label}: {pf.vendor}:{pf.device}, driver {pf.driver or 'none'}, sriov_totalvfs {pf.total_vfs}"
    lines = ["\n", f"# {title}\n"]
    if links_note:
        lines.append(f"# {links_note}\n")
    lines += [f"# {note}\n" for note in notes]
    lines.append("[[pf]]\n")
    if by == "name" and pf.name:
        lines.append(_line("", "name", pf.name, pf.pci))
    elif by == "altname" and altnames:  # the first: udev's path name, where udev gave one
        lines.append(_line("", "altname", altnames[0], f"{pf.name} {pf.pci}"))
    elif by == "altname":
        lines.append(_line("", "pci", pf.pci, f"{pf.name or 'no netdev'}: no alternative name "
                           + ("to read (no netlink)" if altnames is None else "")))
    else:
        lines.append(_line("", "pci", pf.pci, pf.name))
    lines.append(_line("", "num_vfs", pf.num_vfs or 0))
    if pf.autoprobe is False:
        lines.append(_line("", "drivers_autoprobe", False, "VFs are not probed when created"))
    if eswitch == "switchdev":
        lines.append(_line("", "eswitch_mode", eswitch))
    for (driver, comment, settings, *_), indices in sorted(groups.items(), key=lambda kv: kv[1][0]):
        lines.append("\n")
        if comment:
            lines.append(f"  # VF(s) {format_ranges(indices)}: {comment}\n")
        lines.append("  [[pf.vfs]]\n")
        lines.append(_line("  ", "range", format_ranges(indices)))
        if driver is not None:
            lines.append(_line("  ", "driver", driver))
        for key, value in settings:
            lines.append(_line("  ", key, value))
    return lines


def _observe(host: Host, pci: str) -> PfState:
    """The PF, its VFs' bindings and settings (one RTM_GETLINK), its eswitch mode: all through the
    host's capabilities, as the engine observes."""
    return observe_pf(host, pci, want=Wanted(vfs=True, links=True, eswitch=True, vf_detail=False, guids=True))


def select_pfs(heads: HostState, wanted: Tuple[str, ...]) -> List[PfState]:
    """The PFs asked for, each by PCI address, netdev name or alternative name, as a [[pf]] block's
    `pci`, `name` and `altname` select (engine/resolve.py: the name first, then the alternative
    names, read through netlink). A selector no SR-IOV PF answers to is a UsageError naming it."""
    chosen: List[PfState] = []
    for text in wanted:
        found = ([pf for pf in heads.pfs if pf.pci == text] or [pf for pf in heads.pfs if text in pf.netdevs]
                 or [pf for pf in heads.pfs if text in (heads.altnames(pf) or ())])
        if not found:
            unknown = [pf.label for pf in heads.pfs if pf.netdevs and heads.altnames(pf) is None]
            have = "; ".join(f"{pf.label}" + (f" (altname {', '.join(heads.altnames(pf) or ())})"
                                             if heads.altnames(pf) else "") for pf in heads.pfs)
            raise UsageError(f"capture: no SR-IOV PF has the PCI address, name or alternative name {text!r}"
                             + (f" (the alternative names of {', '.join(unknown)} cannot be read here: no netlink)"
                                if unknown else "")
                             + f"; SR-IOV PFs here: {have or 'none'}. Nothing was written")
        chosen += [pf for pf in found if pf not in chosen]
    return chosen


def capture_config(host: Host, *, by: str = "pci", pfs: Tuple[str, ...] = ()) -> str:
    """The TOML text of the host's current layout (validated before it is returned); `pfs`: only
    these PFs (by PCI address, name or alternative name), each captured even without VFs."""
    heads = observe(host, vfs_of=())
    asked = select_pfs(heads, pfs) if pfs else None
    where = socket.gethostname() if host.is_real_root else f"the root {host.root}"
    lines = [
        f"# sriov-node desired state captured by `sriov-node capture` from {where} on "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}.\n",
        "# Each block holds what the kernel showed: sriov_numvfs, the VF drivers pinned with driver_override,\n",
        "# VF settings that differ from a new VF's. `sriov-node apply` of this file changes nothing here;\n",
        "# edit it, then `sriov-node validate` and `sriov-node apply`.\n",
        "version = 1\n",
    ]
    skipped = []
    taken: Dict[Tuple[str, str], str] = {}  # one VF's address is one VF's, across the PFs too
    for head in heads.pfs if asked is None else asked:
        if not head.num_vfs and asked is None:
            skipped.append(head.label)
            continue
        lines += _pf_block(_observe(host, head.pci), by, heads.altnames(head) if by == "altname" else None, taken)
    if skipped:
        lines += ["\n", f"# Not captured (no VFs): {', '.join(skipped)}. A block with num_vfs = 0 would keep them so.\n"]
    others = [pf.label for pf in heads.pfs if asked is not None and pf not in asked]
    if others:
        lines += ["\n", f"# Only the PFs asked for were captured; not in this file: {', '.join(others)}. Applied as the "
                  "node's whole config, it leaves them unmanaged: what sriov-node set on them is put back as it was "
                  "before (merge the blocks into the node's config to keep them).\n"]
    text = "".join(lines)
    try:
        parse_config(text.encode("utf-8"), "<capture>")
    except SriovNodeError as exc:  # pragma: no cover - a capture must always be valid
        raise SriovNodeError(f"the captured config is not valid, which is a bug in sriov-node capture: {exc}")
    return text
