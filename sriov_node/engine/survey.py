"""What the engine and the read-only commands share: the config's path, loading it, and the survey:
observing the host as far as resolution needs, then each target PF with everything its block asks
about, and what the comparison finds there. `status`, `metrics`, `export` and the progress lines
render a Survey; none of them observes, resolves or compares on its own.

Kept apart from the engine so that `validate` and `status` import none of the writing side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple, Union

from sriov_node.config import load_config
from sriov_node.host import Host
from sriov_node.host.observe import Wanted, observe, observe_pf
from sriov_node.engine.compare import Finding, assess, hold, holdable
from sriov_node.engine.outcome import host_converged
from sriov_node.model import DesiredState, HostState, PfSpec, PfState
from sriov_node.engine.resolve import Resolution, Target, resolve

__all__ = ["Survey", "Judged", "judge", "survey", "narrowed", "heads_of", "observe_target", "config_path",
           "load_desired", "Only"]

# which PFs to survey: all (None), these, or those a function picks from the whole host's resolution
# (of the PFs, none of their VFs: boot's "present, with its driver, not run yet"), in the same pass
Only = Union[None, FrozenSet[str], Callable[[Resolution], FrozenSet[str]]]


def config_path(host: Host, explicit: Optional[str]) -> str:
    """--config wins; otherwise etc/sriov-node/config.toml under the root."""
    return explicit or host.path("etc/sriov-node", "config.toml")


def load_desired(host: Host, path: str) -> DesiredState:
    """A root daemon on the real root must not obey a file that non-root users can edit."""
    enforce = host.is_real_root and os.geteuid() == 0
    return load_config(path, enforce_trust=enforce)


@dataclass(frozen=True)
class Judged:
    """One target (a PF and the block that selects it) with what the comparison found."""

    target: Target
    findings: Tuple[Finding, ...]  # every difference; none: the PF is as its block wants it
    unjudged: Tuple[Finding, ...]  # what could not be judged either way (never a difference, never "ok")
    # VF settings that differ on a VF in use: its holder's (a VM, DPDK, a pod's CNI) while it holds
    # the VF, each naming who (`Finding.held_by`); never a difference, never written, never "ok"
    held: Tuple[Finding, ...] = ()

    @property
    def converged(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class Survey:
    """What the host has against what the config wants, read once: the PFs (`heads`, as resolution
    needs them), which block selects which PF (`resolution`), and per target its findings (`judged`,
    compared when first asked)."""

    heads: HostState
    resolution: Resolution
    judged_now: bool = field(default=True, repr=False, compare=False)  # False: the targets carry no VFs
    # what the targets put back (engine/preimages.py), per PF: values no block manages any more
    restoring: Dict[str, Dict[str, object]] = field(default_factory=dict, repr=False, compare=False)
    # each target's block as the config says it, before anything to put back was merged in
    specs: Dict[str, PfSpec] = field(default_factory=dict, repr=False, compare=False)
    # values to put back that the PF's driver is known to refuse in its mode: they wait (restores)
    waiting: Dict[str, Dict[str, object]] = field(default_factory=dict, repr=False, compare=False)
    host: Optional[Host] = field(default=None, repr=False, compare=False)  # who holds a VF is asked there
    # with `only` and `whole`: every block's target, its VFs read in the same pass (the run's targets
    # are the same values), with the failures and notices of the whole host: the host beside the run
    whole: Optional[Resolution] = field(default=None, repr=False, compare=False)
    # every block resolved against the PFs (none of their VFs), before `only` and anything to put
    # back: which PF each block selects and its driver, the blocks that select none (None: the survey
    # read only the PFs of its run, `narrowed`)
    resolved: Optional[Resolution] = field(default=None, repr=False, compare=False)
    only: Optional[FrozenSet[str]] = field(default=None, repr=False, compare=False)  # the PFs surveyed (None: all)
    _judged: List[Tuple[Judged, ...]] = field(default_factory=list, repr=False, compare=False)

    @property
    def targets(self) -> Tuple[Target, ...]:
        return self.resolution.targets

    @property
    def judged(self) -> Tuple[Judged, ...]:
        if not self.judged_now:
            raise ValueError("a survey taken without the VFs judges nothing")
        if not self._judged:
            self._judged.append(tuple(judge(self.host, t) for t in self.resolution.targets))
        return self._judged[0]

    def judged_by_pci(self) -> Dict[str, Judged]:
        return {j.target.pf.pci: j for j in self.judged}

    @property
    def converged(self) -> bool:
        """The host is converged: every block resolves here and every PF is as its block wants it."""
        return host_converged((j.findings for j in self.judged), self.resolution.failures)


def survey(host: Host, desired: Optional[DesiredState], only: Only = None,
           *, vfs: bool = True, detail: bool = False, every_vf: bool = False,
           restore: Optional[Mapping[str, Mapping[str, object]]] = None, restore_all: bool = False,
           last_blocks: Optional[Mapping[str, str]] = None, whole: bool = False) -> Survey:
    """Observe what resolution needs (PFs, not their VFs), resolve, then read the targets' VFs
    (unless `vfs` is False: for a caller that needs only to know which PFs the blocks select, and
    their drivers). `detail`: each target VF's netdevs and IOMMU group too;
    `every_vf`: the VFs of the PFs no block selects as well (what `status` shows). No config
    (`desired` None): the PFs only, nothing resolved.

    `restore`: values to put back where no block manages them any more (engine/preimages.py), merged
    into the targets' blocks; a PF no block selects gets a block of its own, run when `only` names it
    (or every time with `restore_all`). What is put back is in `Survey.restoring`.

    `last_blocks` (PF -> the block it last ran under): with `only`, a PF whose block is another now
    is surveyed too (an `index` rule moved to it when a PF left or came).

    `only` may be a function of the whole host's resolution (`Survey.resolved`), called once, that
    picks the PFs (`Survey.only`).

    `whole` (with `only`): the other targets' VFs are read in the same pass too, and the whole
    resolution kept in `Survey.whole` (what a per-PF run's device plugin file is built from)."""
    sels = [s.selector for s in desired.pfs] if desired is not None else []
    narrow = narrowed(desired, only, restore=bool(restore), whole=whole and vfs, every_vf=every_vf)
    if narrow is not None and not all(host.sysfs.is_sriov_pf(dev) for dev in narrow):
        # one of them is no SR-IOV PF here (gone, its SR-IOV off, never one): what is said of it
        # names the PFs the host has, so the host is read whole
        narrow = None
    heads = observe(
        host,
        vfs_of=None if every_vf else (),
        macs=any(s.mac is not None for s in sels),
        ifnames=[s.name for s in sels if s.name is not None],
        devices=[s.pci for s in sels if s.pci is not None],
        vhost_net=desired is not None and any(g.resource and g.vhost_net for s in desired.pfs for g in s.vfs),
        pfs_of=narrow,
    )
    if desired is None:
        return Survey(heads, Resolution(()))
    resolution = resolve(desired, heads)
    # resolved against some PFs only, the other blocks' answers are not the host's: none is kept
    resolved = resolution if narrow is None else None
    picking = callable(only)
    if callable(only):
        assert resolved is not None  # a picking run is never narrowed
        only = frozenset(only(resolved))
        if not only:  # a look that picks nothing runs nothing: no PF is added to it either
            return Survey(heads, Resolution(()), judged_now=False, resolved=resolved, only=only)
    picked = only

    def runnable(pf: PfState) -> bool:  # what a picking run may add: a PF it can run now (its driver is bound)
        return not picking or pf.driver is not None

    if only is not None and last_blocks is not None:
        only = frozenset(only) | {t.pf.pci for t in resolution.targets
                                 if last_blocks.get(t.pf.pci) not in (None, t.spec.key) and runnable(t.pf)}
    specs = {t.pf.pci: t.spec for t in resolution.targets if only is None or t.pf.pci in only}
    restoring: Dict[str, Dict[str, object]] = {}
    waiting: Dict[str, Dict[str, object]] = {}
    if restore:
        from sriov_node.engine.preimages import RESTORE_KEY, overlay

        resolution, restoring, _, waiting = overlay(resolution, restore, {pf.pci: pf for pf in heads.pfs})
        if only is not None and restore_all:
            only = frozenset(only) | {t.pf.pci for t in resolution.targets
                                     if t.spec.key.startswith(RESTORE_KEY) and runnable(t.pf)}
        if only is not None:
            restoring = {pci: entry for pci, entry in restoring.items() if pci in only}
            waiting = {pci: entry for pci, entry in waiting.items() if pci in only}
    everything = resolution if whole and only is not None and vfs else None
    resolution = resolution.only(only)
    if not resolution.targets:
        everything = None  # nothing runs: nothing is built from the rest
    if not vfs:
        return Survey(heads, resolution, judged_now=False, restoring=restoring, specs=specs, waiting=waiting,
                      resolved=resolved, only=picked)
    read = {t.pf.pci: Target(t.spec, observe_target(host, t, detail=detail))
            for t in (everything or resolution).targets}
    targets = tuple(read[t.pf.pci] for t in resolution.targets)
    return Survey(heads, Resolution(targets, resolution.failures, resolution.notices), restoring=restoring,
                  specs=specs, host=host, waiting=waiting, resolved=resolved, only=picked,
                  whole=None if everything is None else Resolution(tuple(read[t.pf.pci] for t in everything.targets),
                                                                   everything.failures, everything.notices))


def narrowed(desired: Optional[DesiredState], only: Only, *, restore: bool = False, whole: bool = False,
             every_vf: bool = False) -> Optional[FrozenSet[str]]:
    """The PFs a survey of `only` needs to read as PFs, when that is fewer than the host's: `only`
    itself. None: every PF (the survey reads the whole host).

    A run of some PFs reports only about them (`Resolution.only`), and whether a block selects one
    of them depends on that PF alone (name, pci, mac, vendor+device without `index`), as do a
    conflict (two blocks selecting it) and its capacity. So the other PFs are not read, except when
    something the run decides or says does depend on them:
    - an `index` rule (vendor+device's N-th PF: the PFs before it on the host, and `last_blocks`);
    - an `altname` (name and altname naming two PFs: the error names the other);
    - values to put back (`restore`: a PF no block selects gets them only when every block selects
      a PF here, engine/preimages.py `overlay`);
    - `whole`: the other targets are read for the device plugin's file of the whole node;
    - `every_vf` (what `status` shows), no config, or a run of every PF (`only` None) or a picking
      one (`only` a function of the whole host's resolution: boot's).
    A PF of `only` that is not an SR-IOV PF here (gone, never one) has the whole host read too: what
    is said of it names the PFs the host has."""
    if desired is None or only is None or callable(only) or restore or whole or every_vf:
        return None
    if any(s.selector.index is not None or s.selector.altname is not None for s in desired.pfs):
        return None
    return frozenset(only)


def heads_of(host: Host, desired: Optional[DesiredState], *, macs: bool = False, ifnames: Tuple[str, ...] = (),
             devices: Tuple[str, ...] = ()) -> HostState:
    """The PFs as resolving `desired` needs them, none of their VFs (what `survey` reads first);
    `macs`, `ifnames`, `devices`: what a caller's own PF reference needs too, in the same pass."""
    sels = [s.selector for s in desired.pfs] if desired is not None else []
    return observe(host, vfs_of=(), macs=macs or any(s.mac is not None for s in sels),
                   ifnames=list(dict.fromkeys([s.name for s in sels if s.name is not None] + list(ifnames))),
                   devices=list(dict.fromkeys([s.pci for s in sels if s.pci is not None] + list(devices))))


def judge(host: Optional[Host], target: Target) -> Judged:
    """The one judgement of a target (the survey's, and the verification's after a run): compare,
    then, for the VFs whose own settings differ (only those: a converged PF asks nobody), ask who
    holds them (`holders.held_by`: a netdev moved out, a vfio group or uio device open); a held
    VF's settings are its holder's, set aside as `held` and never planned. Without a host
    (`host` None) nobody is asked."""
    findings, caveats, held = assess(target.spec, target.pf)
    asked = {f.vf for f in findings if holdable(f)}
    if asked and host is not None:
        from sriov_node.host.holders import held_by
        from sriov_node.host.observe import observe_vf

        who = held_by(host, [observe_vf(host, vf.index, vf.pci) for vf in target.pf.vfs if vf.index in asked])
        if who:
            findings, more = hold(findings, who)
            held += more
    return Judged(target, findings, caveats, held)


def observe_target(host: Host, target: Target, *, detail: bool = False,
                   known_vfs: Optional[Mapping[int, str]] = None) -> PfState:
    """The PF with what its block's comparison needs (VFs' drivers, and VF settings, MTUs, eswitch
    when wanted); with `detail`, also each VF's netdevs and IOMMU group (what `status` shows)."""
    return observe_pf(host, target.pf.pci, want=Wanted.for_spec(target.spec, macs=target.pf.mac is not None,
                                                                   detail=detail), known_vfs=known_vfs)
