"""Bind each [[pf]] block to the PFs it selects on this host.

What the file says about itself is checked in config.py (exit 2, nothing written). What depends
on this host — a selector that matches no PF, a count above a PF's sriov_totalvfs, two blocks
choosing one PF, a block giving one VF MAC or GUID that selects several PFs here, switchdev
representors' names that clash with the host's PFs or each other (`config.check_on_host`) — fails
only the blocks concerned: the other PFs still converge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

from sriov_node.config import check_on_host
from sriov_node.drivers import capacity_words
from sriov_node.model import DesiredState, HostState, PfSpec, PfState

# BlockFailure kinds
ABSENT = "absent"  # the selector matches no PF here (yet: a late driver, a NIC that failed)
NOT_A_PF = "not_a_pf"  # it names a device that exists but is not an SR-IOV PF
CONFLICT = "conflict"  # two blocks select the same PF
CAPACITY = "capacity"  # num_vfs above the PF's sriov_totalvfs
MISMATCH = "mismatch"  # name and altname name two different PFs (or altname is not the named PF's)
INVALID_HERE = "invalid_here"  # what the block gives is wrong on this host: one VF MAC for several PFs, clashing names


@dataclass(frozen=True)
class Target:
    """One PF and the block that wants something of it."""

    spec: PfSpec
    pf: PfState


@dataclass(frozen=True)
class BlockFailure:
    """A block that cannot be applied on this host, and why."""

    key: str  # "pf[1]"
    kind: str
    message: str
    pf: Optional[str] = None  # the PF concerned, when there is one
    attr: Optional[str] = None  # the key inside the block ("name", "num_vfs", ...)

    def render(self) -> str:
        where = f"{self.key}.{self.attr}" if self.attr else self.key
        return f"{where}: {self.message}"

    def to_dict(self) -> Dict[str, Any]:
        return {"block": self.key, "kind": self.kind, "pf": self.pf, "key": self.attr, "message": self.message}


@dataclass(frozen=True)
class Resolution:
    """The config resolved against the host: each block's PFs (targets), the blocks that failed, notices."""

    targets: Tuple[Target, ...]
    failures: Tuple[BlockFailure, ...] = ()
    notices: Tuple[str, ...] = field(default_factory=tuple)

    def only(self, pcis: Optional[frozenset]) -> "Resolution":
        """The part about the PFs in `pcis` (a per-PF run does not report the other blocks)."""
        if pcis is None:
            return self
        return Resolution(
            tuple(t for t in self.targets if t.pf.pci in pcis),
            tuple(f for f in self.failures if f.pf is not None and f.pf in pcis),
            (),
        )


def _known_pfs(host: HostState) -> str:
    if not host.pfs:
        return "this host has no SR-IOV PFs"
    return "SR-IOV PFs here: " + ", ".join(pf.label for pf in host.pfs)


def _not_a_pf(host: HostState, pci: str) -> str:
    parent = host.physfn.get(pci)
    if parent is not None:
        owner = host.pf(parent)
        return f"is a VF of {owner.label if owner else parent}, not a PF"
    return (
        "is not an SR-IOV PF (no sriov_totalvfs): SR-IOV is disabled in the BIOS/firmware "
        "(enable 'SR-IOV Support'; for mlx5: mlxconfig set SRIOV_EN=1 NUM_OF_VFS=N) or the device has no SR-IOV capability"
    )


def _altnames_text(names: Tuple[str, ...]) -> str:
    return f"alternative names {', '.join(names)}" if names else "no alternative names"


def _by_altname(spec: PfSpec, host: HostState, failures: List[BlockFailure],
                named: Optional[List[PfState]] = None) -> List[PfState]:
    """The PF whose netdev has the alternative name `altname` (with `name` too: `named`, the PF that
    name selected, must be the one)."""
    sel, key = spec.selector, spec.key
    alt = sel.altname
    unknown = [pf for pf in host.pfs if pf.netdevs and host.altnames(pf) is None]
    found = [pf for pf in host.pfs if alt in (host.altnames(pf) or ())]
    if named is not None:  # name and altname: one PF must have both
        pf = named[0]
        if pf in found:
            return named
        if unknown:
            failures.append(BlockFailure(key, ABSENT, f"the alternative names of {pf.label} cannot be read here "
                                         "(no netlink: a captured tree), so altname cannot be checked; drop altname",
                                         pf.pci, "altname"))
            return []
        where = (f"it is an alternative name of {found[0].label}" if found else
                 "no SR-IOV PF here has it")
        failures.append(BlockFailure(key, MISMATCH, f"name {sel.name!r} is {pf.label}, which has "
                                     f"{_altnames_text(host.altnames(pf) or ())}, but altname is {alt!r} ({where}); "
                                     "name and altname must name the same PF: fix one, or keep only one of them",
                                     pf.pci, "altname"))
        return []
    if not found:
        if unknown:
            why = (f"the alternative names of {', '.join(pf.label for pf in unknown)} cannot be read here (no "
                   "netlink: a captured tree); select the PF by name, pci or mac")
        else:
            have = [f"{pf.label}: {', '.join(host.altnames(pf) or ())}" for pf in host.pfs if host.altnames(pf)]
            why = ("no SR-IOV PF has the alternative name " + repr(alt) + "; "
                   + ("alternative names here: " + "; ".join(have) if have else "no PF here has alternative names")
                   + " (udev gives them from the PF's path and slot; `ip link property add dev PF altname NAME`)")
        failures.append(BlockFailure(key, ABSENT, why, None, "altname"))
    return found


def _select(spec: PfSpec, host: HostState, failures: List[BlockFailure], notices: List[str]) -> List[PfState]:
    sel, key = spec.selector, spec.key
    if sel.name is None and sel.altname is not None:
        return _by_altname(spec, host, failures)
    if sel.name is not None:
        found = [pf for pf in host.pfs if sel.name in pf.netdevs]
        if found and sel.altname is not None:
            return _by_altname(spec, host, failures, found)
        if not found:
            owner = host.netdev_owners.get(sel.name)
            known = host.pf(owner) if owner else None
            if known is not None:
                # the PF's net/ was listed a moment before the name came (udev's rename of a netdev
                # that just appeared, a driver reload): the name leads to a PF, so it is that PF
                return [known]
            if owner and owner in host.pci_devices:
                failures.append(BlockFailure(key, NOT_A_PF, f"{sel.name!r} ({owner}) {_not_a_pf(host, owner)}", owner, "name"))
            else:
                failures.append(BlockFailure(key, ABSENT, f"no network interface named {sel.name!r} (not present, or its "
                                             f"driver is not bound yet); {_known_pfs(host)}", None, "name"))
        return found
    if sel.pci is not None:
        found = [pf for pf in host.pfs if pf.pci == sel.pci]
        if not found:
            if sel.pci in host.pci_devices:
                failures.append(BlockFailure(key, NOT_A_PF, f"{sel.pci} {_not_a_pf(host, sel.pci)}", sel.pci, "pci"))
            else:
                failures.append(BlockFailure(key, ABSENT, f"no PCI device {sel.pci} on this host; {_known_pfs(host)}",
                                             sel.pci, "pci"))
        return found
    if sel.mac is not None:
        found = [pf for pf in host.pfs if pf.mac == sel.mac]
        if not found:
            failures.append(BlockFailure(key, ABSENT, f"no SR-IOV PF has permanent MAC {sel.mac}; {_known_pfs(host)}",
                                         None, "mac"))
        return found
    found = [pf for pf in host.pfs if pf.vendor == sel.vendor and pf.device == sel.device]
    if sel.index is not None:
        found = found[sel.index: sel.index + 1]
    if not found:
        notices.append(f"{key}: no PF matches {sel.describe()} on this host; skipped")
    return found


def resolve(desired: DesiredState, host: HostState) -> Resolution:
    """Targets in config order, the blocks that fail here, and notices (fleet rules matching nothing)."""
    failures: List[BlockFailure] = []
    notices: List[str] = []
    chosen: List[Tuple[PfSpec, PfState]] = []
    for spec in desired.pfs:
        chosen += [(spec, pf) for pf in _select(spec, host, failures, notices)]
    by_pf: Dict[str, List[str]] = {}
    for spec, pf in chosen:
        by_pf.setdefault(pf.pci, []).append(spec.key)
    targets: List[Target] = []
    for spec, pf in chosen:
        others = [k for k in by_pf[pf.pci] if k != spec.key]
        if others:
            failures.append(BlockFailure(spec.key, CONFLICT, f"selects {pf.label}, which {', '.join(others)} also "
                                         "selects; merge the blocks (the PF is left as it is)", pf.pci))
            continue
        if pf.total_vfs is not None and spec.num_vfs > pf.total_vfs:
            failures.append(BlockFailure(
                spec.key, CAPACITY,
                f"{spec.num_vfs} exceeds sriov_totalvfs = {pf.total_vfs} of {pf.label}; "
                + capacity_words(pf.driver, pf.pci, spec.num_vfs, pf.total_vfs), pf.pci, "num_vfs"))
            continue
        targets.append(Target(spec, pf))
    # what a block gives that is wrong on this host only (one VF address on several PFs, representors'
    # names): that block fails, as a selector that matches nothing here does
    failed: Set[str] = set()
    for problem in check_on_host(chosen, [(t.spec, t.pf) for t in targets], host.pfs):
        block, _, attr = problem.key.partition(".")
        pfs = [pf for spec, pf in chosen if spec.key == block]
        failed.add(block)
        failures.append(BlockFailure(block, INVALID_HERE, problem.message, pfs[0].pci if len(pfs) == 1 else None,
                                     attr or None))
    targets = [t for t in targets if t.spec.key not in failed]
    return Resolution(tuple(targets), tuple(failures), tuple(notices))
