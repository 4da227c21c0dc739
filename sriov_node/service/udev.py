"""udev rules that keep NetworkManager's hands off SR-IOV VFs (NM_UNMANAGED=1)."""

from __future__ import annotations

from typing import Sequence

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
