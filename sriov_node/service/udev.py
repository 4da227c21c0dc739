"""udev rules that keep NetworkManager's hands off SR-IOV VFs and switchdev representors (NM_UNMANAGED=1),
and name the representors from phys_port_name."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from sriov_node.config import RepresentorPf, representor_names as checked_names

__all__ = ["HEADER", "REPRESENTOR_HEADER", "REPRESENTOR_PORTS", "RepresentorPf", "managed_vfs_rule", "representor_names",
           "representor_rules"]

HEADER = """\
# Keep NetworkManager off SR-IOV VFs (NM_UNMANAGED=1), and let systemd-networkd match them too
# (SRIOV_NODE_VF=1 for a .network [Match] Property=): VFs are handed to pods and VMs whole.
# A VF's netdev has device/physfn. A VF is its PF's sibling on the bus, not its child, so
# KERNELS/ATTRS never see the PF: to name PFs, the rule reads the physfn link.
"""


def managed_vfs_rule(pfs: Sequence[str]) -> str:
    """A rule for the VFs of these PFs (PCI addresses) only; every VF when `pfs` is empty."""
    lines = [HEADER.rstrip("\n"), 'SUBSYSTEM!="net", GOTO="sriov_node_vf_end"',
             'ACTION!="add|change|move", GOTO="sriov_node_vf_end"', 'TEST!="device/physfn", GOTO="sriov_node_vf_end"']
    if pfs:
        lines.append("# only the VFs of the PFs this config manages (sriov-node udev-rule)")
        lines.append('PROGRAM="/usr/bin/readlink -f /sys$devpath/device/physfn", '
                     f'RESULT=="{"|".join("*/" + pf for pf in pfs)}", ENV{{NM_UNMANAGED}}="1", ENV{{SRIOV_NODE_VF}}="1"')
    else:
        lines.append('ENV{NM_UNMANAGED}="1", ENV{SRIOV_NODE_VF}="1"')
    lines.append('LABEL="sriov_node_vf_end"')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- switchdev representors

REPRESENTOR_HEADER = """\
# Switchdev representors named from phys_port_name (pfMvfN: VF N's representor), kept off
# NetworkManager like VFs (NM_UNMANAGED=1, SRIOV_NODE_REPRESENTOR=1). A representor's device is
# its PF's (KERNELS matches the PF); the PF's own netdev, re-made by some drivers when the eswitch
# mode changes (and named with an "np0" suffix by the naming scheme then), keeps its name.
"""


def representor_names(pfs: Sequence[RepresentorPf]) -> Tuple[Dict[str, List[str]], List[Tuple[str, str]]]:
    """({PF device: its representors' names by VF index}, [(key, problem)]): the names as `config.representor_names`
    checks them (the one check, which validate and apply make too), and a PF whose template needs {pf} and
    that has no netdev now (its rule cannot be printed yet)."""
    problems: List[Tuple[str, str]] = []
    for pf in pfs:
        if "{pf}" in pf.template and not pf.name:
            problems.append((f"{pf.key}.representor_name", f"{pf.device}: the PF has no netdev now, so {pf.template!r} has no {{pf}} "
                            "to name its representors after; print the rule while the PF's driver is bound"))
    names, more = checked_names(pfs)
    return names, problems + more


def representor_rules(pfs: Sequence[RepresentorPf]) -> Tuple[str, List[Tuple[str, str]]]:
    """(the rules for these switchdev PFs' representors and their own names, [(key, problem)]); no
    text when there is a problem. Names that clash with the host's PFs fail their block when the
    config is resolved (engine/resolve.py): those PFs are not given here."""
    if not pfs:
        return "", []
    names, problems = representor_names(pfs)
    if problems:
        return "", problems
    lines = [REPRESENTOR_HEADER.rstrip("\n"), 'SUBSYSTEM!="net", GOTO="sriov_node_rep_end"',
             'ACTION!="add|change|move", GOTO="sriov_node_rep_end"']
    for i, pf in enumerate(pfs):
        lines.append(f"# {pf.key}: {pf.device}" + (f" ({pf.name})" if pf.name else "") + f", {pf.num_vfs} VFs")
        if pf.name:  # matched positively: a driver without phys_port_name (unreadable) matches no != either
            label = f"sriov_node_rep_pf{i}"
            mac = f', ATTR{{address}}=="{pf.mac}"' if pf.mac else ""
            lines.append(f'KERNELS=="{pf.device}", ATTR{{phys_port_name}}=="{REPRESENTOR_PORTS}", GOTO="{label}"')
            lines.append(f'ACTION=="add", KERNELS=="{pf.device}"{mac}, NAME="{pf.name}"')
            lines.append(f'LABEL="{label}"')
        for vf, name in enumerate(names[pf.device]):
            lines.append(f'KERNELS=="{pf.device}", ATTR{{phys_port_name}}=="pf*vf{vf}", NAME="{name}", '
                         'ENV{NM_UNMANAGED}="1", ENV{SRIOV_NODE_REPRESENTOR}="1"')
    lines.append('LABEL="sriov_node_rep_end"')
    return "\n".join(lines) + "\n", []


# what a representor's phys_port_name looks like (a VF's, an SF's, an external controller's)
REPRESENTOR_PORTS = "pf*vf*|pf*sf*|c*pf*"
