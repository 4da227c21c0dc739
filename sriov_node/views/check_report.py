"""`sriov-node check`: decide what the config asks of the platform, observe it, run the checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Set, Tuple

from sriov_node.checks.diagnose import SKIP, WARN, CheckResult, PfWant, Report, Scope, diagnose
from sriov_node.config import check_ifname, normalize_pci
from sriov_node.errors import UsageError
from sriov_node.host import Host
from sriov_node.host.observe import netdev_owners, observe
from sriov_node.host.paths import PCI_DEVICES
from sriov_node.host.platform import observe_platform, pci_functions_with_ids, sriov_candidates
from sriov_node.platform import PlatformState
from sriov_node.model import DRIVER_NONE, DesiredState, HostState, PfSpec, is_override_only, is_vfio
from sriov_node.engine.resolve import ABSENT, NOT_A_PF, resolve

_IDS = re.compile(r"^(?:0x)?([0-9a-f]{4}):(?:0x)?([0-9a-f]{4})$")


@dataclass(frozen=True)
class Selector:
    """--pf: a PCI address, a network interface name, or VENDOR:DEVICE."""

    text: str
    pci: Optional[str] = None
    ifname: Optional[str] = None
    ids: Optional[Tuple[str, str]] = None


def parse_selector(text: str) -> Selector:
    value = text.strip()
    pci = normalize_pci(value)
    if pci is not None:
        return Selector(text, pci=pci)
    m = _IDS.match(value.lower())
    if m:
        return Selector(text, ids=(m.group(1), m.group(2)))
    why = check_ifname(value)
    if why:
        raise UsageError(f"--pf {text!r}: not a PCI address (0000:3b:00.0), an interface name or VENDOR:DEVICE "
                         f"(8086:159b): as an interface name it {why}")
    return Selector(text, ifname=value)


def _selected(host: Host, sel: Selector) -> List[str]:
    if sel.pci is not None:
        return [sel.pci] if host.sysfs.device_exists(sel.pci) else []
    if sel.ids is not None:
        return pci_functions_with_ids(host, *sel.ids)
    owner = netdev_owners(host, [sel.ifname or ""]).get(sel.ifname or "")
    return [owner] if owner and host.sysfs.is_pci(owner) else []


def _known(heads: HostState) -> str:
    return ("SR-IOV PFs here: " + ", ".join(pf.label for pf in heads.pfs)) if heads.pfs else "this host has no SR-IOV PFs"


def _label(host: Host, pci: str, labels: Dict[str, str]) -> str:
    if pci in labels:
        return labels[pci]
    netdevs = sorted(host.sysfs.listdir(PCI_DEVICES, pci, "net"))
    return f"{pci} ({', '.join(netdevs)})" if netdevs else pci


def _vf_drivers(spec: PfSpec) -> Set[Optional[str]]:
    drivers = {g.driver for g in spec.vfs}
    covered = sum(len(g.indices) for g in spec.vfs)
    if covered < spec.num_vfs:
        drivers.add(None)  # VFs no group names: the kernel's default driver
    return drivers if spec.num_vfs else set()


def build_scope(host: Host, desired: Optional[DesiredState], selector: Optional[Selector]) -> Scope:
    """The PFs and drivers to examine, from the config (all of it, or the part --pf selects)."""
    if desired is None or (not desired.pfs and selector is None):
        heads = observe(host, vfs_of=())
        if selector is None:
            # nothing asked of any PF: every function that is or could be an SR-IOV PF, and whether it can make VFs
            labels = {pf.pci: pf.label for pf in heads.pfs}
            severity = None if desired is None else WARN  # an empty config wants no VF: nothing here fails it
            survey = tuple(PfWant(p, label=_label(host, p, labels), survey=True, severity=severity, unasked=True)
                           for p in sriov_candidates(host))
            if desired is None:
                return Scope(False, survey, drivers=("vfio-pci",), survey=True)
            return Scope(True, survey, vfio=False, netdev_vfs=False, survey=True, survey_severity=WARN)
        found = _selected(host, selector)
        labels = {pf.pci: pf.label for pf in heads.pfs}
        missing = () if found else ((selector.text, f"--pf {selector.text} matches no PCI function here; "
                                                    f"{_known(heads)}"),)
        return Scope(False, tuple(PfWant(p, label=_label(host, p, labels), survey=True) for p in found), missing,
                     drivers=("vfio-pci",))

    sels = [s.selector for s in desired.pfs]
    heads = observe(host, vfs_of=(), macs=any(s.mac for s in sels), ifnames=[s.name for s in sels if s.name],
                    devices=[s.pci for s in sels if s.pci])
    resolution = resolve(desired, heads)
    chosen: Optional[Set[str]] = None
    unmatched: List[Tuple[str, str]] = []
    if selector is not None:
        chosen = set(_selected(host, selector))
        if not chosen:
            unmatched.append((selector.text, f"--pf {selector.text} matches no PCI function here; {_known(heads)}"))
    by_key: Dict[str, PfSpec] = {s.key: s for s in desired.pfs}
    wants: List[PfWant] = []
    used: Set[str] = set()
    labels = {pf.pci: pf.label for pf in heads.pfs}
    for t in resolution.targets:
        if chosen is None or t.pf.pci in chosen:
            wants.append(PfWant(t.pf.pci, t.spec.key, t.spec.num_vfs, None, t.pf.label))
            used.add(t.spec.key)
    for f in resolution.failures:
        spec = by_key[f.key]
        if chosen is not None and (f.pf is None or f.pf not in chosen):
            continue
        text = f"{desired.source}: {f.render()}"
        used.add(f.key)
        if f.kind == ABSENT or f.pf is None or (f.kind == NOT_A_PF and f.pf in heads.physfn):
            unmatched.append((f.key, text))
        else:
            wants.append(PfWant(f.pf, f.key, spec.num_vfs, text, labels.get(f.pf)))
    notes: List[CheckResult] = []
    for spec in desired.pfs:
        sel = spec.selector
        if spec.key in used or not sel.is_fleet_rule:
            continue
        matches = [p for p in pci_functions_with_ids(host, sel.vendor or "", sel.device or "")
                   if chosen is None or p in chosen]
        if sel.index is not None:
            matches = matches[sel.index: sel.index + 1]
        if not matches:
            if chosen is None:
                notes.append(CheckResult("pf_selected", SKIP, f"{spec.key}: no PCI function matches "
                                                              f"{sel.describe()} on this host", block=spec.key))
            continue
        used.add(spec.key)
        for p in matches:
            wants.append(PfWant(p, spec.key, spec.num_vfs, f"{desired.source}: {spec.key}: {p} matches "
                                                            f"{sel.describe()} but is not an SR-IOV PF here", p))
    if chosen is not None:
        seen = {w.pci for w in wants}
        wants += [PfWant(p, label=labels.get(p)) for p in sorted(chosen) if p not in seen]
    specs = [s for s in desired.pfs if s.key in used]
    drivers = sorted({d for s in specs for d in s.named_drivers() if d})
    vf_drivers = [d for s in specs for d in _vf_drivers(s)]
    return Scope(
        has_config=True,
        pfs=tuple(wants),
        unmatched=tuple(unmatched),
        drivers=tuple(drivers),
        vfio=any(is_vfio(d) for d in vf_drivers),
        netdev_vfs=any(not (is_override_only(d) or d == DRIVER_NONE) for d in vf_drivers),
        notes=tuple(notes),
    )


def run_checks(host: Host, desired: Optional[DesiredState], selector: Optional[Selector] = None
               ) -> Tuple[PlatformState, Scope, Report]:
    scope = build_scope(host, desired, selector)
    state = observe_platform(host, [w.pci for w in scope.pfs], scope.drivers)
    report = diagnose(state, scope)
    _firmware(host, state, scope, report)
    return state, scope, report


def _firmware(host: Host, state: PlatformState, scope: Scope, report: Report) -> None:
    """mlx5 PFs a block asks VFs of: the firmware's SRIOV_EN and NUM_OF_VFS (mstconfig, read-only)."""
    from sriov_node.checks.firmware import check_mlx_firmware
    from sriov_node.host.firmware import query

    for want in scope.pfs:
        dev = state.device(want.pci)
        if dev is None or dev.driver != "mlx5_core" or want.block is None:
            continue
        tool, output, error = query(host.root, host.kind, want.pci)
        if tool is None and host.kind == "capture":
            continue
        report.add(check_mlx_firmware(want.pci, want.label or want.pci, want.block, want.num_vfs, tool, output, error))
