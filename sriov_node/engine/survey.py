"""What the engine and the read-only commands share: the config's path, loading it, and observing the
host as far as resolution needs, then each target PF with everything its block asks about.

Kept apart from the engine so that `validate` and `status` import none of the writing side.
"""

from __future__ import annotations

import os
from typing import FrozenSet, Mapping, Optional, Tuple

from sriov_node.config import load_config
from sriov_node.host import Host
from sriov_node.host.observe import Wanted, observe, observe_pf
from sriov_node.model import DesiredState, HostState, PfState
from sriov_node.engine.resolve import Resolution, Target, resolve


def config_path(host: Host, explicit: Optional[str]) -> str:
    """--config wins; otherwise etc/sriov-node/config.toml under the root."""
    return explicit or host.path("etc/sriov-node", "config.toml")


def load_desired(host: Host, path: str) -> DesiredState:
    """A root daemon on the real root must not obey a file that non-root users can edit."""
    enforce = host.is_real_root and os.geteuid() == 0
    return load_config(path, enforce_trust=enforce)


def survey(host: Host, desired: DesiredState, only: Optional[FrozenSet[str]] = None,
           *, vfs: bool = True) -> Tuple[HostState, Resolution]:
    """Observe what resolution needs (PFs, not their VFs), resolve, then read the targets' VFs
    (unless `vfs` is False: `validate` needs only to know which PFs the blocks select)."""
    sels = [s.selector for s in desired.pfs]
    heads = observe(
        host,
        vfs_of=(),
        macs=any(s.mac is not None for s in sels),
        ifnames=[s.name for s in sels if s.name is not None],
        devices=[s.pci for s in sels if s.pci is not None],
    )
    resolution = resolve(desired, heads).only(only)
    if not vfs:
        return heads, resolution
    targets = tuple(Target(t.spec, observe_target(host, t)) for t in resolution.targets)
    return heads, Resolution(targets, resolution.failures, resolution.notices)


def observe_target(host: Host, target: Target, *, detail: bool = False,
                   known_vfs: Optional[Mapping[int, str]] = None) -> PfState:
    """The PF with what its block's comparison needs (VFs' drivers, and VF settings, MTUs, eswitch
    when wanted); with `detail`, also each VF's netdevs and IOMMU group (what `status` shows)."""
    return observe_pf(host, target.pf.pci, want=Wanted.for_spec(target.spec, macs=target.pf.mac is not None,
                                                                   detail=detail), known_vfs=known_vfs)
