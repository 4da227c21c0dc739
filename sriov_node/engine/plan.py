"""Findings -> phased actions. Pure: the kernel's ordering rules live here, and nowhere else.

Phases run in order:

    modules   drivers to load (named ones, and the kernel's default when a probe needs it)
    pf        the PF netdev's MTU (before VFs are created: VF drivers size buffers from it)
    count     sriov_numvfs (through 0) and the eswitch mode, in the order the PF driver needs
    guids     InfiniBand VF GUIDs, set while the VFs are unbound (unbinds first; the bindings and
              probes after it bind them again: mlx5_ib takes a VF's GUIDs when it probes the VF)
    bindings  driver_override, unbind, bind
    links     VF settings held by the PF driver (MAC, VLAN, rates...), one request per PF
    restore   autoprobe back, default drivers probed
    netdevs   VF netdev MTUs, once their drivers made them

A plan also carries `on_failure`: the clean-up to run when it stops early (a failed write,
SIGTERM), so a half-done run never leaves the PF refusing default drivers, nor hands a VF
meant for a named driver to another one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

from sriov_node.engine.actions import (
    Action,
    BindDriver,
    LoadDriver,
    ProbeVf,
    ReplugPf,
    SetAutoprobe,
    SetDriverOverride,
    SetEswitchMode,
    SetNumVfs,
    SetPfMtu,
    SetVfGuids,
    SetVfMtu,
    SetVfSetting,
    UnbindDriver,
)
from sriov_node.engine.compare import (
    DRIVER,
    ESWITCH,
    GUID_SOURCE,
    GUIDS,
    OVERRIDE,
    PF_MTU,
    VF_LINKS,
    VF_MTU,
    Finding,
    compare,
    compare_driver,
    remakes_vfs,
)
from sriov_node import drivers
from sriov_node.model import (
    DRIVER_ANY,
    DRIVER_DEFAULT,
    VF_LINK_ATTRS,
    PfState,
    VfLinks,
    VfSpec,
    VfState,
    format_ranges,
)
from sriov_node.engine.resolve import Target

PHASES = ("modules", "pf", "count", "guids", "bindings", "links", "restore", "netdevs")

# The order a PF driver needs for its eswitch mode (no_vfs, vfs_unbound, any) is its row of
# sriov_node/drivers.py. A disable (sriov_numvfs -> 0) can take the eswitch back to legacy: netdevsim
# does (nsim_drv_configure_vfs -> nsim_esw_legacy_enable), mlx5 did before 6.0 (the eswitch went to
# NONE, then LEGACY on the next enable), Intel's out-of-tree ice does (in-tree ice keeps it).
# So a count change that passes through 0 is always followed by the wanted mode, on every
# driver, whether or not the mode differs before it: a no-op where the driver kept it.


def eswitch_order(pf: PfState) -> str:
    return drivers.eswitch_order(pf.driver)


@dataclass(frozen=True)
class PfPlan:
    target: Target
    findings: Tuple[Finding, ...] = ()
    phases: Tuple[Tuple[str, Tuple[Action, ...]], ...] = ()
    on_failure: Tuple[Action, ...] = ()

    @property
    def pf(self) -> str:
        return self.target.pf.pci

    @property
    def actions(self) -> Tuple[Action, ...]:
        return tuple(a for _, actions in self.phases for a in actions)

    @property
    def recreates(self) -> bool:
        """True when this plan writes 0 over existing VFs (the step that can block or yank)."""
        return any(isinstance(a, ReplugPf) or (isinstance(a, SetNumVfs) and a.value == 0)
                   for a in self.actions) and bool(self.target.pf.vfs)

    def disturbed_vfs(self) -> Tuple[VfState, ...]:
        """VFs this plan takes from their current driver: all of them on a disable, else the unbound ones.

        Either step blocks in vfio-pci's remove while userspace holds the device, and pulls
        a netdev out of the pod it was moved into.
        """
        if self.recreates:
            return self.target.pf.vfs
        unbound = {a.vf for a in self.actions if isinstance(a, UnbindDriver)}
        return tuple(vf for vf in self.target.pf.vfs if vf.index in unbound)

    def disturbances(self) -> Dict[int, str]:
        """What this plan would do to each VF it takes from its driver, in words (index -> sentence)."""
        pf = self.target.pf
        if self.recreates:
            want = self.target.spec.num_vfs
            steps = f"sriov_numvfs {pf.num_vfs or 0} -> 0" + (f" -> {want}" if want else "")
            if any(isinstance(a, ReplugPf) for a in self.actions):
                steps = "the VFs are disabled, the PF removed and the bus rescanned, to drop a stale virtfn link" + (
                    f", then sriov_numvfs 0 -> {want}" if want else "")
            return {vf.index: f"would be removed: all VFs are disabled ({steps})" for vf in pf.vfs}
        out: Dict[int, str] = {}
        for phase, actions in self.phases:
            for n, action in enumerate(actions):
                if not isinstance(action, UnbindDriver) or action.vf in out:
                    continue
                later = [a for _, acts in self.phases for a in acts
                         if a.target_vf == action.vf and isinstance(a, (BindDriver, ProbeVf))]
                then = ("bound to " + later[0].driver if isinstance(later[0], BindDriver)
                        else "given the kernel's default driver") if later else "left unbound"
                if phase == "count":
                    mode = next((a.value for a in actions[n:] if isinstance(a, SetEswitchMode)), None)
                    why = f" for the eswitch mode change to {mode}" if mode else ""
                    out[action.vf] = f"would be unbound from {action.driver}{why}, then {then}"
                else:
                    out[action.vf] = f"would be unbound from {action.driver} and {then}"
        return out

    def disturbance_summary(self) -> str:
        """The step that disturbs VFs, for the first words of a refusal."""
        if self.recreates:
            return "disable all VFs"
        vfs = sorted(self.disturbances())
        if any(isinstance(a, SetEswitchMode) for _, acts in self.phases if _ == "count" for a in acts) and \
                any(isinstance(a, UnbindDriver) for _, acts in self.phases if _ == "count" for a in acts):
            return f"unbind VF(s) {format_ranges(vfs)} for an eswitch mode change"
        return f"unbind VF(s) {format_ranges(vfs)}"

    def action_dicts(self) -> List[Dict[str, object]]:
        return [dict(a.to_dict(), phase=phase) for phase, actions in self.phases for a in actions]


@dataclass(frozen=True)
class Plan:
    pfs: Tuple[PfPlan, ...]

    @property
    def actions(self) -> Tuple[Action, ...]:
        return tuple(a for p in self.pfs for a in p.actions)

    def to_dict(self) -> Dict[str, object]:
        return {
            "actions": [a for p in self.pfs for a in p.action_dicts()],
            "on_failure": [a.to_dict() for p in self.pfs for a in p.on_failure],
        }


def _loaded(driver: str, loaded: FrozenSet[str]) -> bool:
    return driver in loaded or driver.replace("_", "-") in loaded or driver.replace("-", "_") in loaded


def _unbound(vf: VfState) -> VfState:
    return VfState(vf.index, vf.pci, None, vf.driver_override, (), False, vf.iommu_group, vf.links, None)


class _Builder:
    """Collects one PF's actions by phase; bindings are kept in kernel-safe order."""

    def __init__(self, pf: PfState):
        self.pf = pf
        self.pf_phase: List[Action] = []
        self.count: List[Action] = []
        self.overrides: List[Action] = []
        self.unbinds: List[Action] = []
        self.binds: List[Action] = []
        self.restore: List[Action] = []
        self.probes: List[Action] = []
        self.links: Dict[str, List[Tuple[int, Any]]] = {}
        self._fresh: Dict[Optional[str], List[Finding]] = {}
        self.fresh_default = False  # a VF this plan creates wants the kernel's default driver
        self.netdevs: List[Action] = []
        self.guid_unbinds: List[Action] = []
        self.guids: List[Tuple[int, str, str]] = []
        self._wanted: Dict[int, Tuple[VfLinks, Tuple[Tuple[str, Any], ...]]] = {}  # id(links) -> (links, wanted)

    def guid_values(self, want: VfSpec) -> None:
        """The VF's wanted GUIDs (derived from the PF's GUID, or given); "auto" when the PF has none
        (the plan is then refused by preflight, naming the PF)."""
        if want.guids is None:
            return
        wanted = want.guids.wanted(want.index, self.pf.ib_guid)
        if wanted is None:
            self.guids.append((want.index, "node_guid", "auto"))
            return
        self.guids += [(want.index, key, value) for key, value in wanted.items()]

    def guid_actions(self) -> Tuple[Action, ...]:
        if not self.guids:
            return ()
        return tuple(self.guid_unbinds) + (SetVfGuids(self.pf.pci, ifname=self.pf.name or "", values=tuple(self.guids)),)

    def vf(self, index: int, findings: Sequence[Finding], fresh: bool = False) -> None:
        """The actions that fix one VF's DRIVER and OVERRIDE findings, as the comparison stated them
        (`fresh`: a VF this plan creates, unbound, no override, probed by the kernel or by `probes`)."""
        pf = self.pf.pci
        for f in findings:
            if f.attr == OVERRIDE:
                self.overrides.append(SetDriverOverride(pf, vf=index, driver=f.want))
            elif f.attr == DRIVER:
                if f.have is not None:
                    self.unbinds.append(UnbindDriver(pf, vf=index, driver=f.have))
                if f.default:
                    if not fresh:
                        self.probes.append(self.probe(index))
                    elif self.pf.driver is not None:  # the kernel's autoprobe binds it at creation, if its
                        self.fresh_default = True     # driver is loaded by then (no PF driver: no VFs at all)
                elif f.want is not None:
                    self.binds.append(BindDriver(pf, vf=index, driver=f.want))

    def probe(self, index: int) -> ProbeVf:
        """A probe of the VF's default driver: loading that driver is planned (`default_load`) when the
        observation named it (modules.alias, VFs present); else the probe carries the LOAD_DEFAULT rule."""
        return ProbeVf(self.pf.pci, vf=index, load_default=self.pf.vf_default_drivers is None)

    def default_load(self, loaded: FrozenSet[str]) -> Optional[str]:
        """The kernel's default driver for these VFs, when a probe needs it, or VFs created with
        autoprobe on want it (the kernel binds only a driver that is loaded: loading it on a modalias
        is udev's, and a node without udevd at that moment gets unbound VFs), and none is loaded."""
        defaults = self.pf.vf_default_drivers
        if not defaults or not (self.fresh_default or any(isinstance(a, ProbeVf) for a in self.probes)):
            return None
        return None if any(_loaded(d, loaded) for d in defaults) else defaults[0]

    def fresh_vf(self, want: VfSpec) -> None:
        """A VF this plan creates: the findings of its spec against a VF as the kernel makes it (the
        same for every VF that wants the same driver: compared once per driver)."""
        findings = self._fresh.get(want.driver)
        if findings is None:
            new = VfState(index=want.index, pci="", driver=None, driver_override=None)
            findings = self._fresh[want.driver] = compare_driver(want, new, None, self.pf.vf_default_drivers)
        self.vf(want.index, findings, fresh=True)

    def settings(self, want: VfSpec, only: Optional[Set[str]] = None) -> None:
        """The VF's wanted settings (those in `only`, when given: the ones that differ)."""
        links = want.links
        known = self._wanted.get(id(links))
        if known is None or known[0] is not links:  # the VFs of a group share their VfLinks: computed once
            known = self._wanted[id(links)] = (links, tuple(links.wanted().items()))
        for attr, value in known[1]:
            if only is None or attr in only:
                self.links.setdefault(attr, []).append((want.index, value))

    def bindings(self) -> Tuple[Action, ...]:
        # Every override first: from then on no default driver can take a VF meant for another.
        return tuple(self.overrides + self.unbinds + self.binds)

    def link_actions(self) -> Tuple[Action, ...]:
        ifname = self.pf.name or ""
        return tuple(SetVfSetting(self.pf.pci, ifname=ifname, attr=attr,
                                  values=tuple(self._lowered_first(self.links[attr]) if attr == "rate" else self.links[attr]))
                     for attr in VF_LINK_ATTRS if attr in self.links)

    def _lowered_first(self, values: List[Tuple[int, Any]]) -> List[Tuple[int, Any]]:
        """The VF rates in the order a driver that guarantees the VFs' min_tx_rate out of the link
        (ice) can take them: the VFs that lower theirs first, then those that raise it (the executor
        sends the VFs in this order). Two VFs swapping their minimums on a full link are refused the
        other way round (ice_min_tx_rate_oversubscribed judges each VF against what the others hold)."""
        def current(index: int) -> int:
            vf = self.pf.vf(index)
            return (vf.links.min_tx_rate or 0) if vf is not None and vf.links is not None else 0

        return sorted(values, key=lambda item: item[1][0] > current(item[0]))  # stable: VF order within each


def plan_pf(target: Target, loaded_drivers: FrozenSet[str],
            findings: Optional[Tuple[Finding, ...]] = None) -> PfPlan:
    """The actions that take one PF to its spec; none when the comparison finds nothing.
    `findings`: the comparison of this target already made (the survey's), else it is made here."""
    spec, pf = target.spec, target.pf
    reported = findings = compare(spec, pf) if findings is None else findings
    if not findings:
        return PfPlan(target)
    replug = None
    if pf.stale_virtfns and pf.bus == "pci" and spec.num_vfs and remakes_vfs(spec, findings):
        # (with no VFs wanted, writing 0 is enough: the stale link matters only when VFs are made)
        # A stale virtfnN link (a VF removed by hand) makes the kernel refuse to create VF N again
        # (EEXIST) until the PF itself is removed and found again by a rescan. Plan the rest for the
        # PF as it comes back: no VFs, autoprobe 1, its MTU and eswitch mode the driver's defaults.
        replug = ReplugPf(pf.pci, ifname=pf.name, stale=pf.stale_virtfns)
        pf = replace(pf, num_vfs=0, vfs=(), stale_virtfns=(), mtu=None, eswitch_mode=None,
                     autoprobe=None if pf.autoprobe is None else True)
        findings = compare(spec, pf)
    attrs = {f.attr for f in findings}
    b = _Builder(pf)
    pci = pf.bus == "pci"
    have = pf.num_vfs or 0
    wants = spec.vf_specs()
    want_auto = spec.autoprobe_wanted
    autoprobe = pf.autoprobe is not False  # what the kernel will do with VFs added from here on
    on_failure: List[Action] = []

    if replug is not None:
        b.pf_phase.append(replug)
    if PF_MTU in attrs and pf.name and spec.mtu is not None:
        b.pf_phase.append(SetPfMtu(pf.pci, ifname=pf.name, value=spec.mtu, current=pf.mtu))
    mode = None
    if ESWITCH in attrs and spec.eswitch_mode is not None:
        mode = SetEswitchMode(pf.pci, handle=pf.devlink_handle, value=spec.eswitch_mode, current=pf.eswitch_mode)
    order = eswitch_order(pf)
    recreate = remakes_vfs(spec, findings)
    if mode is not None and order == "no_vfs" and (have or pf.vfs):
        if spec.externally_managed:
            mode = None  # the count is not ours to take through 0: the finding stays, reported
        else:
            recreate = True
    through_zero = recreate and bool(have or pf.vfs)
    if through_zero and mode is None and spec.eswitch_mode is not None:
        # the disable may reset the mode (the note above eswitch_order): set it again after it
        mode = SetEswitchMode(pf.pci, handle=pf.devlink_handle, value=spec.eswitch_mode, current=pf.eswitch_mode)
    if mode is not None and order == "any" and not through_zero:
        b.count.append(mode)
        mode = None

    if recreate:
        if have or pf.vfs:
            # SR-IOV is all or nothing: the kernel answers EBUSY to N over M, so go through 0.
            b.count.append(SetNumVfs(pf.pci, value=0, current=have))
        if mode is not None and (order != "vfs_unbound" or not spec.num_vfs):
            b.count.append(mode)  # after the 0 (which may have reset it), before the VFs exist
            mode = None
        if spec.num_vfs:
            # With drivers to choose (or an eswitch that wants its VFs unbound), create the VFs
            # unprobed so the default driver never grabs them.
            gate = any(v.driver not in (DRIVER_DEFAULT, DRIVER_ANY) for v in wants) or mode is not None \
                or spec.wants_guids  # VFs must be unbound while their GUIDs are set
            if pci and pf.autoprobe is not None and autoprobe and gate:
                b.count.append(SetAutoprobe(pf.pci, value=False))
                autoprobe = False
                on_failure = [SetDriverOverride(pf.pci, vf=v.index, driver=v.driver) for v in wants
                              if v.driver not in (DRIVER_DEFAULT, DRIVER_ANY)]
                on_failure.append(SetAutoprobe(pf.pci, value=want_auto if want_auto is not None else True))
                on_failure += [b.probe(v.index) for v in wants if v.driver in (DRIVER_DEFAULT, DRIVER_ANY)]
            b.count.append(SetNumVfs(pf.pci, value=spec.num_vfs, current=0))
            if mode is not None:  # vfs_unbound: the VFs exist and nothing is bound to them
                b.count.append(mode)
                mode = None
            for want in wants:
                if pci:
                    b.fresh_vf(want)
                b.settings(want)
                b.guid_values(want)
            if pci and not autoprobe:  # created unprobed: the VFs the kernel would have probed need a probe
                b.probes += [b.probe(v.index) for v in wants if v.driver in (DRIVER_DEFAULT, DRIVER_ANY)]
    else:
        vfs = list(pf.vfs)
        bindings: Dict[Optional[int], List[Finding]] = {}
        for f in findings:
            if f.attr in (DRIVER, OVERRIDE):
                bindings.setdefault(f.vf, []).append(f)
        if mode is not None:  # vfs_unbound, or no_vfs with no VFs: unbind what is bound, then switch
            for vf in vfs:
                if vf.driver is not None:
                    b.count.append(UnbindDriver(pf.pci, vf=vf.index, driver=vf.driver))
            b.count.append(mode)
            vfs = [_unbound(vf) for vf in vfs]
            # the bindings are judged again for the VFs as the switch leaves them: unbound
            bindings = {vf.index: compare_driver(spec.vf(vf.index), vf, pf.vf_default_driver, pf.vf_default_drivers)
                        for vf in vfs if vf.index < spec.num_vfs}
        redo: Dict[int, Optional[Set[str]]] = {}
        for f in findings:
            if f.vf is not None and f.attr == VF_LINKS:
                redo[f.vf] = None  # unreadable: send them all
            elif f.vf is not None and f.attr in VF_LINK_ATTRS and redo.get(f.vf, set()) is not None:
                redo.setdefault(f.vf, set()).add(f.attr)  # type: ignore[union-attr]
        guid_vfs = {f.vf for f in findings if f.vf is not None and (f.attr in GUIDS or f.attr == GUID_SOURCE)}
        for vf in vfs:
            want = spec.vf(vf.index)
            if vf.index >= spec.num_vfs:
                continue
            if vf.index in guid_vfs:
                b.guid_values(want)
                if vf.driver is not None and pci:
                    # unbound for the GUIDs, then judged again as unbound: the bindings bind it back
                    b.guid_unbinds.append(UnbindDriver(pf.pci, vf=vf.index, driver=vf.driver))
                    # a run stopped before the bindings: the VF goes back to the driver it had
                    on_failure.append(BindDriver(pf.pci, vf=vf.index, driver=vf.driver))
                    if want.driver == DRIVER_ANY:
                        b.binds.append(BindDriver(pf.pci, vf=vf.index, driver=vf.driver))
                    vf = _unbound(vf)
                    bindings[vf.index] = compare_driver(want, vf, pf.vf_default_driver, pf.vf_default_drivers)
            if pci:
                b.vf(vf.index, bindings.get(vf.index, ()))
            if vf.index in redo:
                b.settings(want, redo[vf.index])
    if want_auto is not None and autoprobe != want_auto and pci and pf.autoprobe is not None:
        (b.restore if spec.num_vfs else b.count).append(SetAutoprobe(pf.pci, value=want_auto))
    mtus = {f.vf for f in findings if f.attr == VF_MTU}
    for want in wants:
        if want.mtu is not None and (recreate or want.index in mtus):
            b.netdevs.append(SetVfMtu(pf.pci, vf=want.index, value=want.mtu))
    needed = {a.driver for a in b.binds if isinstance(a, BindDriver) and not _loaded(a.driver, loaded_drivers)}
    default = b.default_load(loaded_drivers)  # the probes' default driver, known from modules.alias and not loaded
    phases = (
        ("modules", tuple(LoadDriver(pf.pci, driver=d, default=d == default and d not in needed)
                          for d in sorted(needed | ({default} if default is not None else set())))),
        ("pf", tuple(b.pf_phase)),
        ("count", tuple(b.count)),
        ("guids", b.guid_actions()),
        ("bindings", b.bindings()),
        ("links", b.link_actions() if pf.name else ()),
        ("restore", tuple(b.restore + b.probes)),
        ("netdevs", tuple(b.netdevs)),
    )
    return PfPlan(target, reported, tuple((name, acts) for name, acts in phases if acts), tuple(on_failure))


def plan(targets: Sequence[Target], loaded_drivers: FrozenSet[str]) -> Plan:
    """One PfPlan per target, in config order; a converged host yields no actions.

    Each PF's plan stands alone (a driver two PFs need is loaded by whichever runs first;
    the executor skips the load when the driver is already there), so PFs fail independently.
    """
    return Plan(tuple(plan_pf(t, loaded_drivers) for t in targets))
