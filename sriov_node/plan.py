"""Findings -> phased actions. Pure: the kernel's ordering rules live here, and nowhere else.

Phases run in order: modules (drivers to load) -> count (sriov_numvfs, through 0) -> bindings
(driver_override, unbind, bind) -> restore (autoprobe back, default drivers probed). A plan also
carries `on_failure`: the clean-up to run when it stops early (a failed write, SIGTERM), so a
half-done run never leaves the PF refusing default drivers, nor hands a VF meant for a named
driver to another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from sriov_node.actions import (
    Action,
    BindDriver,
    LoadDriver,
    ProbeVf,
    SetAutoprobe,
    SetDriverOverride,
    SetNumVfs,
    UnbindDriver,
)
from sriov_node.compare import RECREATE, Finding, compare
from sriov_node.model import DRIVER_ANY, DRIVER_DEFAULT, DRIVER_NONE, VfSpec, VfState, is_override_only
from sriov_node.resolve import Target

PHASES = ("modules", "count", "bindings", "restore")


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
        return any(isinstance(a, SetNumVfs) and a.value == 0 for a in self.actions) and bool(self.target.pf.vfs)

    def disturbed_vfs(self) -> Tuple[VfState, ...]:
        """VFs this plan takes from their current driver: all of them on a disable, else the unbound ones.

        Either step blocks in vfio-pci's remove while userspace holds the device, and pulls
        a netdev out of the pod it was moved into.
        """
        if self.recreates:
            return self.target.pf.vfs
        unbound = {a.vf for a in self.actions if isinstance(a, UnbindDriver)}
        return tuple(vf for vf in self.target.pf.vfs if vf.index in unbound)

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


class _Builder:
    """Collects one PF's actions by phase; bindings are kept in kernel-safe order."""

    def __init__(self, pf: str):
        self.pf = pf
        self.count: List[Action] = []
        self.overrides: List[Action] = []
        self.unbinds: List[Action] = []
        self.binds: List[Action] = []
        self.restore: List[Action] = []
        self.probes: List[Action] = []

    def vf(self, want: VfSpec, have: Optional[VfState]) -> None:
        """Actions that take one VF (None: freshly created, unbound, no override) to its spec."""
        pf, i, driver = self.pf, want.index, want.driver
        override = have.driver_override if have else None
        bound = have.driver if have else None
        if driver == DRIVER_ANY:
            return
        if driver is DRIVER_DEFAULT:
            if override is not None:
                self.overrides.append(SetDriverOverride(pf, vf=i, driver=None))
            if bound is not None and (is_override_only(bound) or bound == override):
                self.unbinds.append(UnbindDriver(pf, vf=i, driver=bound))
                bound = None
            if bound is None and have is not None:
                self.probes.append(ProbeVf(pf, vf=i))
            return
        if override != driver:
            self.overrides.append(SetDriverOverride(pf, vf=i, driver=driver))
        if bound == (None if driver == DRIVER_NONE else driver):
            return
        if bound is not None:
            self.unbinds.append(UnbindDriver(pf, vf=i, driver=bound))
        if driver != DRIVER_NONE:
            self.binds.append(BindDriver(pf, vf=i, driver=driver))

    def bindings(self) -> Tuple[Action, ...]:
        # Every override first: from then on no default driver can take a VF meant for another.
        return tuple(self.overrides + self.unbinds + self.binds)


def plan_pf(target: Target, loaded_drivers: FrozenSet[str]) -> PfPlan:
    """The actions that take one PF to its spec; none when the comparison finds nothing."""
    spec, pf = target.spec, target.pf
    findings = compare(spec, pf)
    if not findings:
        return PfPlan(target)
    b = _Builder(pf.pci)
    autoprobe = pf.autoprobe is not False  # what the kernel will do with VFs added from here on
    on_failure: List[Action] = []
    if any(f.attr in RECREATE for f in findings):
        have = pf.num_vfs or 0
        if have or pf.vfs:
            # SR-IOV is all or nothing: the kernel answers EBUSY to N over M, so go through 0.
            b.count.append(SetNumVfs(pf.pci, value=0, current=have))
        if spec.num_vfs:
            wants = spec.vf_specs()
            # With drivers to choose, create the VFs unprobed so the default driver never grabs them.
            if autoprobe and any(v.driver not in (DRIVER_DEFAULT, DRIVER_ANY) for v in wants):
                b.count.append(SetAutoprobe(pf.pci, value=False))
                autoprobe = False
                on_failure = [SetDriverOverride(pf.pci, vf=v.index, driver=v.driver) for v in wants
                              if v.driver not in (DRIVER_DEFAULT, DRIVER_ANY)]
                on_failure.append(SetAutoprobe(pf.pci, value=spec.drivers_autoprobe))
                on_failure += [ProbeVf(pf.pci, vf=v.index) for v in wants if v.driver in (DRIVER_DEFAULT, DRIVER_ANY)]
            b.count.append(SetNumVfs(pf.pci, value=spec.num_vfs, current=0))
            for want in wants:
                b.vf(want, None)
            if not autoprobe:  # created unprobed: the VFs the kernel would have probed need a probe of their own
                b.probes += [ProbeVf(pf.pci, vf=v.index) for v in wants if v.driver in (DRIVER_DEFAULT, DRIVER_ANY)]
    else:
        for vf in pf.vfs:
            b.vf(spec.vf(vf.index), vf)
    if autoprobe != spec.drivers_autoprobe and spec.num_vfs:
        b.restore.append(SetAutoprobe(pf.pci, value=spec.drivers_autoprobe))
    elif autoprobe != spec.drivers_autoprobe:
        b.count.insert(0, SetAutoprobe(pf.pci, value=spec.drivers_autoprobe))
    needed = sorted({a.driver for a in b.binds if isinstance(a, BindDriver) and not _loaded(a.driver, loaded_drivers)})
    phases = (
        ("modules", tuple(LoadDriver(pf.pci, driver=d) for d in needed)),
        ("count", tuple(b.count)),
        ("bindings", b.bindings()),
        ("restore", tuple(b.restore + b.probes)),
    )
    return PfPlan(target, findings, tuple((name, acts) for name, acts in phases if acts), tuple(on_failure))


def plan(targets: Sequence[Target], loaded_drivers: FrozenSet[str]) -> Plan:
    """One PfPlan per target, in config order; a converged host yields no actions.

    Each PF's plan stands alone (a driver two PFs need is loaded by whichever runs first;
    the executor skips the load when the driver is already there), so PFs fail independently.
    """
    return Plan(tuple(plan_pf(t, loaded_drivers) for t in targets))
