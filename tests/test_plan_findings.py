"""The plan builds each VF's binding from the comparison's DRIVER / DRIVER_OVERRIDE findings, and
capture's `driver` key is the inverse of that comparison (both live in compare.py).

The plan decides nothing of a VF's driver by itself: whatever the comparison states (the override
to write, the driver to unbind, the one to bind or the default to probe) is what it plans.
"""

from __future__ import annotations

import itertools

import pytest

from sriov_node.engine import compare as compare_mod
from sriov_node.engine.actions import BindDriver, ProbeVf, SetDriverOverride, UnbindDriver
from sriov_node.engine.compare import DRIVER, OVERRIDE, Finding, compare_driver, driver_key
from sriov_node.engine.plan import plan_pf
from sriov_node.engine.resolve import Target
from sriov_node.model import DRIVER_ANY, DRIVER_DEFAULT, DRIVER_NONE, PfSelector, PfSpec, PfState, VfGroup, VfSpec, VfState

PF = "0000:3b:00.0"
LOADED = frozenset({"i40e", "iavf", "vfio-pci", "uio_pci_generic"})


def _state(vfs) -> PfState:
    return PfState(pci=PF, vendor="8086", device="1572", driver="i40e", netdevs=("ens1f0",), mac=None, total_vfs=64,
                   num_vfs=len(vfs), autoprobe=True, vf_device="154c", vfs=tuple(vfs),
                   vf_default_driver="iavf", vf_default_drivers=("iavf",))


def _spec(num_vfs: int, driver=DRIVER_DEFAULT) -> PfSpec:
    groups = () if driver is DRIVER_DEFAULT else (VfGroup("pf[0].vfs[0]", "0", frozenset({0}), driver),)
    return PfSpec(key="pf[0]", selector=PfSelector(pci=PF), num_vfs=num_vfs, vfs=groups)


def test_the_plan_binds_what_the_driver_findings_say(monkeypatch):
    """A comparison that states another binding is planned as stated: the plan re-decides nothing."""
    def stated(want, vf, default=None, defaults=None, caveats=None):
        return [Finding(OVERRIDE, "uio_pci_generic", vf.driver_override, vf.index),
                Finding(DRIVER, "uio_pci_generic", vf.driver, vf.index, "bound elsewhere")]

    monkeypatch.setattr(compare_mod, "compare_driver", stated)
    vfs = [VfState(0, "0000:3b:02.0", "iavf", None)]
    actions = plan_pf(Target(_spec(1), _state(vfs)), LOADED).actions
    assert actions == (SetDriverOverride(PF, vf=0, driver="uio_pci_generic"), UnbindDriver(PF, vf=0, driver="iavf"),
                       BindDriver(PF, vf=0, driver="uio_pci_generic"))


DRIVERS = [DRIVER_DEFAULT, DRIVER_NONE, DRIVER_ANY, "vfio-pci", "iavf"]
BOUND = [None, "iavf", "vfio-pci", "uio_pci_generic"]
OVERRIDES = [None, "none", "iavf", "vfio-pci"]


@pytest.mark.parametrize("driver", DRIVERS, ids=lambda d: str(d))
def test_each_binding_finding_becomes_its_actions_and_nothing_else(driver):
    """Over every (wanted, bound, override): one override write per OVERRIDE finding, an unbind of
    the bound driver and a bind (or a probe of the default) per DRIVER finding, nothing without one."""
    for bound, override in itertools.product(BOUND, OVERRIDES):
        vf = VfState(0, "0000:3b:02.0", bound, override)
        findings = compare_driver(VfSpec(0, driver), vf, "iavf", ("iavf",))
        actions = [a for a in plan_pf(Target(_spec(1, driver), _state([vf])), LOADED).actions]
        want_override = next((f.want for f in findings if f.attr == OVERRIDE), "unchanged")
        drv = next((f for f in findings if f.attr == DRIVER), None)
        expected = ([SetDriverOverride(PF, vf=0, driver=want_override)] if want_override != "unchanged" else [])
        if drv is not None and drv.have is not None:
            expected.append(UnbindDriver(PF, vf=0, driver=drv.have))
        if drv is not None and drv.default:
            expected.append(ProbeVf(PF, vf=0))
        elif drv is not None and drv.want is not None:
            expected.append(BindDriver(PF, vf=0, driver=drv.want))
        assert actions == expected, (bound, override, findings)


@pytest.mark.parametrize("autoprobe", [None, True, False])
@pytest.mark.parametrize("default", [None, "iavf"])
def test_captures_driver_key_is_the_inverse_of_compare_driver(default, autoprobe):
    """Whatever a VF shows, the `driver` key capture writes for it makes the comparison find nothing."""
    for bound, override in itertools.product(BOUND + ["ixgbevf"], OVERRIDES + ["uio_pci_generic"]):
        vf = VfState(3, "0000:3b:02.3", bound, override)
        key, comment = driver_key(vf, default, autoprobe)
        assert (comment is not None) == (key == DRIVER_ANY)
        assert compare_driver(VfSpec(3, key), vf, default, (default,) if default else None) == [], (bound, override)
