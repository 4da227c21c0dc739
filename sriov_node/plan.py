"""desired x observed -> ordered actions. Pure: the kernel's ordering rules live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Sequence, Tuple

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
from sriov_node.model import PfSpec, PfState, VfState
from sriov_node.resolve import Target


@dataclass(frozen=True)
class PfPlan:
    target: Target
    actions: Tuple[Action, ...]

    @property
    def pf(self) -> str:
        return self.target.pf.pci

    @property
    def disables_vfs(self) -> bool:
        """True when this plan writes 0 over existing VFs (the step that can block or yank)."""
        return bool(self.target.pf.num_vfs) and any(
            isinstance(a, SetNumVfs) and a.value == 0 for a in self.actions
        )

    def disturbed_vfs(self) -> Tuple[VfState, ...]:
        """VFs this plan takes from their current driver: all of them on a disable, else the unbound ones.

        Either step blocks in vfio-pci's remove while userspace holds the device, and pulls
        a netdev out of the pod it was moved into.
        """
        if self.disables_vfs:
            return self.target.pf.vfs
        unbound = {a.vf for a in self.actions if isinstance(a, UnbindDriver)}
        return tuple(vf for vf in self.target.pf.vfs if vf.index in unbound)


@dataclass(frozen=True)
class Plan:
    pfs: Tuple[PfPlan, ...]

    @property
    def actions(self) -> Tuple[Action, ...]:
        return tuple(a for p in self.pfs for a in p.actions)

    def to_dict(self) -> Dict[str, object]:
        return {"actions": [a.to_dict() for a in self.actions]}


def _bindings(pf: PfState, explicit: Dict[int, str], fresh: bool) -> List[Action]:
    """Per VF: keep driver_override = wanted, and the VF bound to it."""
    out: List[Action] = []
    for index, driver in sorted(explicit.items()):
        vf = None if fresh else pf.vf(index)
        if vf is None or vf.driver_override != driver:
            out.append(SetDriverOverride(pf.pci, vf=index, driver=driver))
        if vf is not None and vf.driver == driver:
            continue
        if vf is not None and vf.driver is not None:
            out.append(UnbindDriver(pf.pci, vf=index, driver=vf.driver))
        out.append(BindDriver(pf.pci, vf=index, driver=driver))
    return out


def plan_pf(spec: PfSpec, pf: PfState, loaded: FrozenSet[str]) -> Tuple[Action, ...]:
    want = spec.num_vfs
    have = pf.num_vfs or 0
    explicit = spec.explicit_drivers() if want else {}
    actions: List[Action] = [
        LoadDriver(pf.pci, driver=d) for d in sorted(set(explicit.values())) if d not in loaded
    ]
    if want == have:
        actions += _bindings(pf, explicit, fresh=False)
        if pf.autoprobe is False:
            # The kernel's default is 1; a 0 is what an interrupted apply leaves behind. Restore
            # it and give the VFs the config names no driver for their default driver.
            actions.append(SetAutoprobe(pf.pci, value=True))
            actions += [ProbeVf(pf.pci, vf=vf.index) for vf in pf.vfs if vf.index not in explicit and vf.driver is None]
        return tuple(actions)
    if have != 0:
        # SR-IOV is all or nothing: the kernel answers EBUSY to N over M, so go through 0.
        actions.append(SetNumVfs(pf.pci, value=0, current=have))
    if want == 0:
        return tuple(actions)
    # With drivers to choose, create the VFs unprobed so the default driver never grabs them.
    if explicit and pf.autoprobe is not False:
        actions.append(SetAutoprobe(pf.pci, value=False))
    actions.append(SetNumVfs(pf.pci, value=want, current=0))
    actions += _bindings(pf, explicit, fresh=True)
    if explicit or pf.autoprobe is False:
        actions.append(SetAutoprobe(pf.pci, value=True))
        actions += [ProbeVf(pf.pci, vf=i) for i in range(want) if i not in explicit]
    return tuple(actions)


def plan(targets: Sequence[Target], loaded_drivers: FrozenSet[str]) -> Plan:
    """One PfPlan per target, in config order; a converged host yields no actions.

    Each PF's plan stands alone (a driver two PFs need is loaded by whichever runs first;
    the executor skips the load when the driver is already there), so PFs fail independently.
    """
    return Plan(tuple(PfPlan(t, plan_pf(t.spec, t.pf, loaded_drivers)) for t in targets))
