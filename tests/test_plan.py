"""The planner is pure: desired x observed -> ordered actions. These tests need no host."""

from __future__ import annotations

from typing import Optional

from sriov_node.actions import BindDriver, LoadDriver, ProbeVf, SetAutoprobe, SetDriverOverride, SetNumVfs
from sriov_node.model import PfSelector, PfSpec, PfState, VfGroup, VfState
from sriov_node.plan import plan, plan_pf
from sriov_node.resolve import Target

PF = "0000:3b:00.0"
LOADED = frozenset({"i40e", "iavf", "vfio-pci"})


def spec(num_vfs: int, *groups: "tuple[str, Optional[str]]") -> PfSpec:
    from sriov_node.config import parse_range

    return PfSpec(
        key="pf[0]",
        selector=PfSelector(name="ens1f0"),
        num_vfs=num_vfs,
        vfs=tuple(VfGroup(f"pf[0].vfs[{i}]", r, parse_range(r), d) for i, (r, d) in enumerate(groups)),
    )


def pf(num_vfs: int, drivers: "dict[int, Optional[str]]" = None, overrides: "dict[int, str]" = None,
       autoprobe: bool = True) -> PfState:
    drivers = drivers if drivers is not None else {i: "iavf" for i in range(num_vfs)}
    overrides = overrides or {}
    vfs = tuple(
        VfState(index=i, pci=f"0000:3b:02.{i}", driver=drivers.get(i), driver_override=overrides.get(i))
        for i in range(num_vfs)
    )
    return PfState(pci=PF, vendor="8086", device="1572", driver="i40e", netdevs=("ens1f0",), mac=None,
                   total_vfs=64, num_vfs=num_vfs, autoprobe=autoprobe, vf_device="154c", vfs=vfs)


def ops(actions) -> list:
    return [(a.op, getattr(a, "value", None), getattr(a, "vf", None), getattr(a, "driver", None)) for a in actions]


def test_converged_pf_plans_nothing():
    state = pf(4, {i: "vfio-pci" for i in range(4)}, {i: "vfio-pci" for i in range(4)})
    assert plan_pf(spec(4, ("0-3", "vfio-pci")), state, LOADED) == ()


def test_enable_from_zero_without_drivers_is_one_write():
    assert ops(plan_pf(spec(8), pf(0), LOADED)) == [("set_num_vfs", 8, None, None)]


def test_resize_goes_through_zero():
    actions = plan_pf(spec(2), pf(4), LOADED)
    assert [(a.op, a.value) for a in actions] == [("set_num_vfs", 0), ("set_num_vfs", 2)]


def test_disable_is_a_single_zero_write():
    assert ops(plan_pf(spec(0), pf(4), LOADED)) == [("set_num_vfs", 0, None, None)]


def test_explicit_drivers_gate_autoprobe_around_creation():
    actions = plan_pf(spec(4, ("0-1", "vfio-pci")), pf(0), LOADED)
    kinds = [type(a) for a in actions]
    # autoprobe off strictly before the VFs exist, overrides before any probe, autoprobe restored after
    assert kinds[0] is SetAutoprobe and actions[0].value is False
    assert kinds[1] is SetNumVfs and actions[1].value == 4
    first_bind = kinds.index(BindDriver)
    assert all(k is SetDriverOverride for k in kinds[2:first_bind])
    restore = [i for i, a in enumerate(actions) if isinstance(a, SetAutoprobe) and a.value]
    assert restore and restore[0] > kinds.index(SetNumVfs)
    # VFs without a named driver get the kernel's default once autoprobe is back on
    assert [a.vf for a in actions if isinstance(a, ProbeVf)] == [2, 3]
    assert all(i > restore[0] for i, a in enumerate(actions) if isinstance(a, ProbeVf))


def test_autoprobe_already_off_is_not_switched_off_again_but_restored_at_the_end():
    actions = plan_pf(spec(3, ("0-1", "vfio-pci")), pf(0, autoprobe=False), LOADED)
    assert [a.value for a in actions if isinstance(a, SetAutoprobe)] == [True]
    assert isinstance(actions[-2], SetAutoprobe) and [a.vf for a in actions if isinstance(a, ProbeVf)] == [2]


def test_autoprobe_left_at_zero_by_an_interrupted_apply_is_repaired():
    state = pf(4, {0: "vfio-pci", 1: "vfio-pci", 2: None, 3: None}, {0: "vfio-pci", 1: "vfio-pci"}, autoprobe=False)
    actions = plan_pf(spec(4, ("0-1", "vfio-pci")), state, LOADED)
    assert ops(actions) == [("set_autoprobe", True, None, None),
                            ("probe_default_driver", None, 2, None), ("probe_default_driver", None, 3, None)]


def test_rebinding_away_from_vfio_marks_the_vf_disturbed():
    from sriov_node.plan import PfPlan

    state = pf(2, {0: "vfio-pci", 1: "iavf"}, {0: "vfio-pci"})
    the_plan = PfPlan(Target(spec(2, ("0-1", "iavf")), state), plan_pf(spec(2, ("0-1", "iavf")), state, LOADED))
    assert [vf.index for vf in the_plan.disturbed_vfs()] == [0]
    assert not the_plan.disables_vfs


def test_no_gating_when_every_vf_keeps_the_default_driver():
    actions = plan_pf(spec(4, ("0-3", None)), pf(0), LOADED)
    assert ops(actions) == [("set_num_vfs", 4, None, None)]


def test_rebind_existing_vf_unbinds_first_and_keeps_override():
    actions = plan_pf(spec(2, ("1", "vfio-pci")), pf(2), LOADED)
    assert ops(actions) == [
        ("set_driver_override", None, 1, "vfio-pci"),
        ("unbind_driver", None, 1, "iavf"),
        ("bind_driver", None, 1, "vfio-pci"),
    ]


def test_bound_right_but_override_missing_only_sets_override():
    state = pf(2, {0: "vfio-pci", 1: "iavf"})
    actions = plan_pf(spec(2, ("0", "vfio-pci")), state, LOADED)
    assert ops(actions) == [("set_driver_override", None, 0, "vfio-pci")]


def test_unloaded_driver_is_loaded_first():
    actions = plan_pf(spec(2, ("0-1", "vfio-pci")), pf(0), frozenset({"i40e", "iavf"}))
    assert isinstance(actions[0], LoadDriver) and actions[0].driver == "vfio-pci"


def test_plan_json_shape():
    target = Target(spec(2, ("0", "vfio-pci")), pf(0))
    body = plan([target], LOADED).to_dict()
    assert body["actions"][1] == {"pf": PF, "op": "set_num_vfs", "value": 2, "current": 0}
    binds = [a for a in body["actions"] if a["op"] == "bind_driver"]
    assert binds == [{"pf": PF, "op": "bind_driver", "vf": 0, "driver": "vfio-pci"}]
    assert all({"pf", "op"} <= set(a) for a in body["actions"])
