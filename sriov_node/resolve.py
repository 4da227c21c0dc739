"""Bind each [[pf]] block to the PFs it selects on this host; check what needs the host to check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from sriov_node.errors import ConfigError, ConfigProblem
from sriov_node.model import DesiredState, HostState, PfSpec, PfState


@dataclass(frozen=True)
class Target:
    """One PF and the block that wants something of it."""

    spec: PfSpec
    pf: PfState


def _pf_label(pf: PfState) -> str:
    return f"{pf.pci} ({pf.name})" if pf.name else pf.pci


def _known_pfs(host: HostState) -> str:
    if not host.pfs:
        return "this host has no SR-IOV PFs"
    return "SR-IOV PFs here: " + ", ".join(_pf_label(pf) for pf in host.pfs)


def _not_a_pf(host: HostState, pci: str) -> str:
    if any(vf.pci == pci for pf in host.pfs for vf in pf.vfs):
        owner = next(pf for pf in host.pfs if any(vf.pci == pci for vf in pf.vfs))
        return f"is a VF of {_pf_label(owner)}, not a PF"
    return (
        "is not an SR-IOV PF (no sriov_totalvfs): SR-IOV is disabled in the BIOS/firmware "
        "(enable 'SR-IOV Support'; for mlx5: mlxconfig set SRIOV_EN=1 NUM_OF_VFS=N) or the device has no SR-IOV capability"
    )


def resolve(desired: DesiredState, host: HostState) -> Tuple[List[Target], List[str]]:
    """(targets in config order, notices). Raises ConfigError for selectors that cannot hold."""
    problems: List[ConfigProblem] = []
    notices: List[str] = []
    targets: List[Target] = []
    taken: Dict[str, str] = {}
    for spec in desired.pfs:
        sel = spec.selector
        key = spec.key
        found: List[PfState] = []
        if sel.name is not None:
            found = [pf for pf in host.pfs if sel.name in pf.netdevs]
            if not found:
                owner = host.netdev_owners.get(sel.name)
                if owner:
                    problems.append(ConfigProblem(f"{key}.name", f"{sel.name!r} ({owner}) {_not_a_pf(host, owner)}"))
                else:
                    problems.append(ConfigProblem(f"{key}.name", f"no network interface named {sel.name!r}; {_known_pfs(host)}"))
                continue
        elif sel.pci is not None:
            found = [pf for pf in host.pfs if pf.pci == sel.pci]
            if not found:
                if sel.pci in host.pci_devices:
                    problems.append(ConfigProblem(f"{key}.pci", f"{sel.pci} {_not_a_pf(host, sel.pci)}"))
                else:
                    problems.append(ConfigProblem(f"{key}.pci", f"no PCI device {sel.pci}; {_known_pfs(host)}"))
                continue
        elif sel.mac is not None:
            found = [pf for pf in host.pfs if pf.mac == sel.mac]
            if not found:
                problems.append(ConfigProblem(f"{key}.mac", f"no SR-IOV PF has permanent MAC {sel.mac}; {_known_pfs(host)}"))
                continue
        else:
            found = [pf for pf in host.pfs if pf.vendor == sel.vendor and pf.device == sel.device]
            if sel.index is not None:
                found = found[sel.index : sel.index + 1]
            if not found:
                notices.append(f"{key}: no PF matches {sel.describe()} on this host; skipped")
                continue
        for pf in found:
            if pf.pci in taken:
                problems.append(ConfigProblem(key, f"selects {_pf_label(pf)}, which {taken[pf.pci]} already selects; merge the two blocks"))
                continue
            taken[pf.pci] = key
            if pf.total_vfs is not None and spec.num_vfs > pf.total_vfs:
                problems.append(ConfigProblem(
                    f"{key}.num_vfs",
                    f"{spec.num_vfs} exceeds sriov_totalvfs = {pf.total_vfs} of {_pf_label(pf)}; use at most {pf.total_vfs}",
                ))
                continue
            targets.append(Target(spec, pf))
    if problems:
        raise ConfigError(desired.source, problems)
    return targets, notices
