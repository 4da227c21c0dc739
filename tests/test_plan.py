"""The planner is pure: desired x observed -> ordered actions. These tests need no host."""

from __future__ import annotations

from typing import Optional

from sriov_node.engine.actions import (
    BIND_FILE,
    DEFAULT_BIND_FILE,
    DEFAULT_TAKEN,
    LOAD_DEFAULT,
    NUMVFS_AGAIN,
    PROBE_RACE,
)
from sriov_node.engine.actions import BindDriver, LoadDriver, ProbeVf, SetAutoprobe, SetDriverOverride, SetNumVfs
from sriov_node.model import PfSelector, PfSpec, PfState, VfGroup, VfState
from sriov_node.engine.plan import PfPlan, plan, plan_pf
from sriov_node.engine.resolve import Target

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


def pplan(spec_: PfSpec, state: PfState, loaded=LOADED) -> PfPlan:
    return plan_pf(Target(spec_, state), loaded)


def acts(spec_: PfSpec, state: PfState, loaded=LOADED) -> tuple:
    return pplan(spec_, state, loaded).actions


def ops(actions) -> list:
    return [(a.op, getattr(a, "value", None), getattr(a, "vf", None), getattr(a, "driver", None)) for a in actions]


def test_converged_pf_plans_nothing():
    state = pf(4, {i: "vfio-pci" for i in range(4)}, {i: "vfio-pci" for i in range(4)})
    the_plan = pplan(spec(4, ("0-3", "vfio-pci")), state)
    assert the_plan.actions == () and the_plan.findings == () and the_plan.on_failure == ()


def test_enable_from_zero_without_drivers_is_one_write():
    assert ops(acts(spec(8), pf(0))) == [("set_num_vfs", 8, None, None)]


def test_resize_goes_through_zero():
    assert [(a.op, a.value) for a in acts(spec(2), pf(4))] == [("set_num_vfs", 0), ("set_num_vfs", 2)]


def test_disable_is_a_single_zero_write():
    assert ops(acts(spec(0), pf(4))) == [("set_num_vfs", 0, None, None)]


def test_named_drivers_gate_autoprobe_around_creation():
    the_plan = pplan(spec(4, ("0-1", "vfio-pci")), pf(0))
    actions = the_plan.actions
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
    assert [name for name, _ in the_plan.phases] == ["count", "bindings", "restore"]


def test_clean_up_pins_named_vfs_and_never_probes_them():
    cleanup = pplan(spec(4, ("0-1", "vfio-pci"), ("2", "none")), pf(0)).on_failure
    assert ops(cleanup) == [
        ("set_driver_override", None, 0, "vfio-pci"),
        ("set_driver_override", None, 1, "vfio-pci"),
        ("set_driver_override", None, 2, "none"),
        ("set_autoprobe", True, None, None),
        ("probe_default_driver", None, 3, None),
    ]


def test_autoprobe_already_off_is_not_switched_off_again_but_restored_at_the_end():
    actions = acts(spec(3, ("0-1", "vfio-pci")), pf(0, autoprobe=False))
    assert [a.value for a in actions if isinstance(a, SetAutoprobe)] == [True]
    assert isinstance(actions[-2], SetAutoprobe) and [a.vf for a in actions if isinstance(a, ProbeVf)] == [2]


def test_autoprobe_left_at_zero_by_an_interrupted_apply_is_repaired():
    state = pf(4, {0: "vfio-pci", 1: "vfio-pci", 2: None, 3: None}, {0: "vfio-pci", 1: "vfio-pci"}, autoprobe=False)
    assert ops(acts(spec(4, ("0-1", "vfio-pci")), state)) == [
        ("set_autoprobe", True, None, None),
        ("probe_default_driver", None, 2, None), ("probe_default_driver", None, 3, None)]


def test_a_default_driver_vf_left_unbound_is_probed_again():
    state = pf(3, {0: "iavf", 1: None, 2: "iavf"})
    the_plan = pplan(spec(3), state)
    assert [f.describe() for f in the_plan.findings] == ["VF 1: no driver bound, want the kernel's default driver"]
    assert ops(the_plan.actions) == [("probe_default_driver", None, 1, None)]


def test_a_missing_vf_means_the_vfs_are_made_again():
    state = pf(4)
    state = PfState(**{**state.__dict__, "vfs": tuple(v for v in state.vfs if v.index != 2)})
    the_plan = pplan(spec(4, ("0-3", "vfio-pci")), state)
    assert the_plan.findings[0].attr == "vfs" and "2" in the_plan.findings[0].describe()
    assert [(a.op, a.value) for a in the_plan.actions if isinstance(a, SetNumVfs)] == [("set_num_vfs", 0), ("set_num_vfs", 4)]
    assert the_plan.recreates and len(the_plan.disturbed_vfs()) == 3


def test_dropping_a_driver_line_returns_the_vf_to_the_default_driver():
    state = pf(2, {0: "vfio-pci", 1: "vfio-pci"}, {0: "vfio-pci", 1: "vfio-pci"})
    the_plan = pplan(spec(2), state)
    assert ops(the_plan.actions) == [
        ("set_driver_override", None, 0, None), ("set_driver_override", None, 1, None),
        ("unbind_driver", None, 0, "vfio-pci"), ("unbind_driver", None, 1, "vfio-pci"),
        ("probe_default_driver", None, 0, None), ("probe_default_driver", None, 1, None),
    ]
    assert [vf.index for vf in the_plan.disturbed_vfs()] == [0, 1]


def test_a_vf_on_vfio_pci_without_override_is_not_the_default():
    state = pf(1, {0: "vfio-pci"})
    assert ops(acts(spec(1), state)) == [("unbind_driver", None, 0, "vfio-pci"), ("probe_default_driver", None, 0, None)]


def test_none_means_unbound_and_pinned():
    state = pf(2, {0: "iavf", 1: None}, {1: "none"})
    assert ops(acts(spec(2, ("0-1", "none")), state)) == [
        ("set_driver_override", None, 0, "none"), ("unbind_driver", None, 0, "iavf")]


def test_any_is_never_touched():
    state = pf(3, {0: "vfio-pci", 1: None, 2: "iavf"}, {0: "vfio-pci", 2: "whatever"})
    assert pplan(spec(3, ("0-2", "any")), state).actions == ()


def test_rebinding_away_from_vfio_marks_the_vf_disturbed():
    state = pf(2, {0: "vfio-pci", 1: "iavf"}, {0: "vfio-pci"})
    the_plan = pplan(spec(2, ("0-1", "iavf")), state)
    assert [vf.index for vf in the_plan.disturbed_vfs()] == [0]
    assert not the_plan.recreates


def test_no_gating_when_every_vf_keeps_the_default_driver():
    assert ops(acts(spec(4, ("0-3", None)), pf(0))) == [("set_num_vfs", 4, None, None)]


def test_rebind_existing_vf_unbinds_first_and_keeps_override():
    assert ops(acts(spec(2, ("1", "vfio-pci")), pf(2))) == [
        ("set_driver_override", None, 1, "vfio-pci"),
        ("unbind_driver", None, 1, "iavf"),
        ("bind_driver", None, 1, "vfio-pci"),
    ]


def test_bound_right_but_override_missing_only_sets_override():
    state = pf(2, {0: "vfio-pci", 1: "iavf"})
    assert ops(acts(spec(2, ("0", "vfio-pci")), state)) == [("set_driver_override", None, 0, "vfio-pci")]


def test_unloaded_driver_is_loaded_first():
    the_plan = pplan(spec(2, ("0-1", "vfio-pci")), pf(0), frozenset({"i40e", "iavf"}))
    assert the_plan.phases[0] == ("modules", (LoadDriver(PF, driver="vfio-pci"),))


def test_plan_json_shape():
    target = Target(spec(2, ("0", "vfio-pci")), pf(0))
    body = plan([target], LOADED).to_dict()
    assert body["actions"][1] == {"pf": PF, "op": "set_num_vfs", "value": 2, "current": 0, "phase": "count",
                                  "retry": NUMVFS_AGAIN.text}
    binds = [a for a in body["actions"] if a["op"] == "bind_driver"]
    assert binds == [{"pf": PF, "op": "bind_driver", "vf": 0, "driver": "vfio-pci", "phase": "bindings",
                      "retry": f"{PROBE_RACE.text}; {BIND_FILE.text}"}]
    assert all({"pf", "op", "phase"} <= set(a) for a in body["actions"])
    # a VF created by this run: its default driver was not known when planning, so it may be loaded
    assert body["on_failure"][-1] == {"pf": PF, "op": "probe_default_driver", "vf": 1,
                                      "retry": f"{DEFAULT_TAKEN.text}; {LOAD_DEFAULT.text}; {DEFAULT_BIND_FILE.text}"}


def test_a_groups_settings_are_worked_out_once_for_all_its_vfs(monkeypatch):
    # the 64 VFs of one group share one VfLinks: its wanted settings are computed once, not per VF
    from dataclasses import replace

    from sriov_node.engine.actions import SetVfSetting
    from sriov_node.model import VfLinks

    want = replace(spec(64, ("0-63", None)), vfs=(VfGroup("pf[0].vfs[0]", "0-63", tuple(range(64)), None,
                                                          VfLinks(vlan=10, trust=True)),))
    calls = []
    plain = VfLinks.wanted
    monkeypatch.setattr(VfLinks, "wanted", lambda self: calls.append(1) or plain(self))
    actions = acts(want, pf(0))
    settings = [a for a in actions if isinstance(a, SetVfSetting)]
    assert [(a.attr, len(a.values)) for a in settings] == [("vlan", 64), ("trust", 64)]
    assert settings[0].values[63] == (63, (10, 0, "802.1Q"))
    assert len(calls) <= 3  # the comparison's and the plan's, not one per VF
