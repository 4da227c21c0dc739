"""VF settings, MTUs and the eswitch mode, through the one comparison, on the simulated kernel.

The simulated PF drivers follow their real ndo_set_vf_* and devlink ops: i40e (no 802.1ad, no
min rate), ice (eswitch only without VFs), mlx5 (802.1ad; rates refused in switchdev), igb (no
link state, rates only on 82576): sriov_node/drivers.py's rows. A step a row says the driver
refuses is refused before the first write (tests/test_driver_table.py walks every row).
"""

from __future__ import annotations

import errno
import json

import pytest

from sriov_node.engine.actions import SetEswitchMode, SetNumVfs
from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.model import PfSelector, PfSpec, PfState, VfState
from sriov_node.engine.plan import plan_pf
from sriov_node.engine.reconcile import survey
from sriov_node.engine.resolve import Target
from sriov_node.sim.kernel import SimKernel
from tests.helpers import apply, run_cli, sim_writes

X710, E810, CX5, I350 = "0000:20:00.0", "0000:30:00.0", "0000:40:00.0", "0000:50:00.0"


@pytest.fixture
def host(make_host):
    return make_host(("x710", 1, None), ("e810", 1, None), ("cx5", 1, None), ("i350", 1, None))


def netlink_requests(host, ifname=None):
    return [v for p, v, r in sim_writes(host) if p == "netlink" and "RTM_SETLINK" in v and (ifname is None or ifname in v)]


def vf_settings(host, ifname):
    return open_host(host.root).links.vf_links(ifname)


EVERY_SETTING = """
[[pf]]
name = "ens3f0"                 # ConnectX-5 (mlx5): every setting, 802.1ad too
num_vfs = 3
mtu = 9000
  [[pf.vfs]]
  range = "0"
  mac = "02:aa:bb:cc:dd:00"
  vlan = 100
  qos = 5
  vlan_proto = "802.1ad"
  spoofchk = false
  trust = true
  link_state = "disable"
  min_tx_rate = 100
  max_tx_rate = 2000
  mtu = 9000
  [[pf.vfs]]
  range = "1-2"
  vlan = 200
  trust = true
"""


def test_every_setting_is_set_read_back_and_idempotent(host, write_config):
    path = write_config(EVERY_SETTING)
    report = apply(host, path)
    assert report.exit_code == 0, report.outcomes[0].error
    vfs = vf_settings(host, "ens3f0")
    assert (vfs[0].mac, vfs[0].vlan, vfs[0].qos, vfs[0].vlan_proto) == ("02:aa:bb:cc:dd:00", 100, 5, "802.1ad")
    assert (vfs[0].spoofchk, vfs[0].trust, vfs[0].link_state) == (False, True, "disable")
    assert (vfs[0].min_tx_rate, vfs[0].max_tx_rate) == (100, 2000)
    assert [(vfs[i].vlan, vfs[i].vlan_proto, vfs[i].trust) for i in (1, 2)] == [(200, "802.1Q", True)] * 2
    h = open_host(host.root)
    assert h.sysfs.read_int("sys/class/net", "ens3f0", "mtu") == 9000
    assert h.sysfs.read_int("sys/class/net", "ens3f0v0", "mtu") == 9000
    assert h.sysfs.read("sys/class/net", "ens3f0v0", "address") == "02:aa:bb:cc:dd:00"  # the VF driver took it
    assert len(netlink_requests(host, "ens3f0")) == 1  # every VF, every setting: one request
    again = apply(host, path)
    assert again.writes == 0 and again.outcomes[0].status == "unchanged"
    assert json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)["pfs"][2]["converged"] is True


def test_only_the_differences_are_sent(host, write_config):
    apply(host, write_config(EVERY_SETTING))
    changed = EVERY_SETTING.replace("vlan = 200", "vlan = 300").replace('range = "1-2"', 'range = "1-2"\n  spoofchk = false')
    before = len(netlink_requests(host))
    report = apply(host, write_config(changed))
    assert report.exit_code == 0
    ops = [a["op"] for a in report.outcomes[0].actions]
    assert ops == ["set_vf_vlan", "set_vf_spoofchk"]  # not trust: VFs 1-2 have it already
    assert [a["vfs"] for a in report.outcomes[0].actions][0] == [{"vf": 1, "value": [300, 0, "802.1Q"]},
                                                                {"vf": 2, "value": [300, 0, "802.1Q"]}]
    assert len(netlink_requests(host)) == before + 1


def test_dry_run_has_one_action_kind_per_setting_batched_per_pf(host, write_config):
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=write_config(EVERY_SETTING)).stdout)
    kinds = [a["op"] for a in body["actions"] if a["phase"] == "links"]
    assert kinds == ["set_vf_mac", "set_vf_vlan", "set_vf_rate", "set_vf_spoofchk", "set_vf_link_state", "set_vf_trust"]
    vlan = next(a for a in body["actions"] if a["op"] == "set_vf_vlan")
    assert vlan["ifname"] == "ens3f0" and [v["vf"] for v in vlan["vfs"]] == [0, 1, 2]
    phases = [a["phase"] for a in body["actions"]]
    assert phases.index("pf") < phases.index("count") < phases.index("links") < phases.index("netdevs")
    assert sim_writes(host) == []


def test_a_refused_setting_names_the_vf_and_setting_and_the_rest_still_applies(host, write_config, monkeypatch):
    # a refusal the driver table does not foresee (an out-of-tree driver, a newer kernel): the
    # preflight lets the plan through and the executor meets the kernel's answer
    import sriov_node.engine.preflight as preflight

    monkeypatch.setattr(preflight, "capabilities", lambda host, plan: ([], []))
    path = write_config("""
        [[pf]]
        name = "ens1f0"          # X710 (i40e): 802.1Q only
        num_vfs = 4
          [[pf.vfs]]
          range = "0-1"
          vlan = 10
          trust = true
          [[pf.vfs]]
          range = "2"
          vlan = 20
          vlan_proto = "802.1ad"
          trust = true
          [[pf.vfs]]
          range = "3"
          vlan = 30
          trust = true
    """)
    report = apply(host, path)
    (outcome,) = [o for o in report.outcomes]
    assert report.exit_code == 1 and outcome.status == "failed"
    assert [(e["vf"], e["attr"], e["errno"]) for e in outcome.errors] == [(2, "vlan", "EPROTONOSUPPORT")]
    assert "i40e supports only 802.1Q" in outcome.error and 'vlan_proto = "802.1Q"' in outcome.error
    vfs = vf_settings(host, "ens1f0")
    assert [(vfs[i].vlan, vfs[i].trust) for i in range(4)] == [(10, True), (10, True), (0, True), (30, True)]
    # VF 2's trust came after its refused VLAN in the kernel's order: sent again with VF 3, not lost
    assert len(netlink_requests(host, "ens1f0")) == 2
    assert [f["vf"] for f in outcome.findings] == [2]


@pytest.mark.parametrize("nic,pf,block,words", [
    ("igb", "ens4f0", "max_tx_rate = 100", ["igb has VF rate limits only on some devices", "not 8086:1521"]),
    ("igb", "ens4f0", 'link_state = "enable"', ["igb has no ndo_set_vf_link_state", "VF(s) 0-1"]),
    ("i40e", "ens1f0", "min_tx_rate = 10\n  max_tx_rate = 100", ["i40e has no minimum tx rate", "drop min_tx_rate"]),
])
def test_unsupported_settings_are_explained(host, write_config, nic, pf, block, words):
    report = apply(host, write_config(f'[[pf]]\nname = "{pf}"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  {block}\n'))
    assert report.exit_code == 1 and report.writes == 0  # refused before the first write
    for word in words:
        assert word in report.outcomes[0].error
    assert len(report.outcomes[0].errors) == 2  # both VFs, each named


def test_settings_set_by_hand_are_put_back(host, write_config):
    path = write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  vlan = 42\n  spoofchk = true\n')
    apply(host, path)
    open_host(host.root).links.set_vf_links("ens2f0", [(1, {"vlan": (7, 0, "802.1Q"), "spoofchk": False})])
    body = json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)
    vf1 = body["pfs"][1]["vfs"][1]
    assert vf1["matches"] is False and "vlan 7 (802.1Q), want vlan 42 (802.1Q)" in vf1["findings"]
    report = apply(host, path)
    assert report.outcomes[0].status == "changed"
    assert [a["op"] for a in report.outcomes[0].actions] == ["set_vf_vlan", "set_vf_spoofchk"]
    assert (vf_settings(host, "ens2f0")[1].vlan, vf_settings(host, "ens2f0")[1].spoofchk) == (42, True)


def test_vf_settings_survive_only_as_long_as_the_pf_driver_and_come_back(host, write_config):
    path = write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  trust = true\n')
    apply(host, path)
    h = open_host(host.root)
    h.sysfs.unbind(E810, "ice")  # a driver reload: the VFs and their settings go away
    h.sysfs.drivers_probe(E810)
    assert h.sysfs.num_vfs(E810) == 0
    assert apply(host, path).exit_code == 0
    assert all(vf.trust for vf in vf_settings(host, "ens2f0").values())


# ---------------------------------------------------------------------------- MTU


def test_pf_mtu_is_set_before_the_vfs_are_created(host, write_config):
    report = apply(host, write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 2\nmtu = 9000\n'))
    assert report.exit_code == 0
    log = [p if p == "netlink" else p.rsplit("/", 1)[-1] for p, v, _ in sim_writes(host) if "mtu" in v or "numvfs" in p]
    assert log == ["netlink", "sriov_numvfs"]


def test_a_pf_mtu_above_the_drivers_limit_is_the_kernels_einval_explained(host, write_config):
    report = apply(host, write_config('[[pf]]\nname = "ens4f0"\nnum_vfs = 1\nmtu = 9500\n'))  # igb: 9216
    assert report.exit_code == 1 and "EINVAL" in report.outcomes[0].error and "MTU" in report.outcomes[0].error
    assert open_host(host.root).sysfs.num_vfs(I350) == 0  # a PF-wide failure stops the plan before the VFs


def test_vf_mtu_waits_for_the_vf_netdev(host, write_config):
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "1"\n  mtu = 4000\n')
    assert apply(host, path).exit_code == 0
    assert open_host(host.root).sysfs.read_int("sys/class/net", "ens1f0v1", "mtu") == 4000
    assert apply(host, path).writes == 0


def test_a_vf_mtu_on_a_vf_without_a_netdev_is_reported(host, write_config):
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n  [[pf.vfs]]\n  range = "0"\n  driver = "any"\n  mtu = 4000\n')
    apply(host, path)
    h = open_host(host.root)
    h.sysfs.unbind(h.sysfs.vf_address(X710, 0), "iavf")
    report = apply(host, path, timeout=0.3)
    assert report.exit_code == 1 and "no netdev to set MTU 4000" in report.outcomes[0].error


# ---------------------------------------------------------------------------- eswitch mode


def test_ice_switches_with_no_vfs_then_makes_them_again(host, write_config):
    apply(host, write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 4\n'))
    report = apply(host, write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 4\neswitch_mode = "switchdev"\n'))
    assert report.exit_code == 0, report.outcomes[0].error
    assert [(a["op"], a.get("value")) for a in report.outcomes[0].actions] == [
        ("set_num_vfs", 0), ("set_eswitch_mode", "switchdev"), ("set_num_vfs", 4)]
    assert open_host(host.root).devlink.eswitch_mode(f"pci/{E810}") == "switchdev"


def test_old_mlx5_creates_unbound_vfs_then_switches_then_binds(host, write_config):
    SimKernel(host.root).add_fault("eswitch_needs_vfs", device=CX5)  # before ~5.3: no mode without VFs
    path = write_config('[[pf]]\nname = "ens3f0"\nnum_vfs = 2\neswitch_mode = "switchdev"\n')
    report = apply(host, path)
    assert report.exit_code == 0, report.outcomes[0].error
    ops = [(a["op"], a.get("value")) for a in report.outcomes[0].actions]
    assert ops[:3] == [("set_autoprobe", False), ("set_num_vfs", 2), ("set_eswitch_mode", "switchdev")]
    assert [vf.driver for vf in survey(open_host(host.root), load_config(path)).resolution.targets[0].pf.vfs] == ["mlx5_core"] * 2
    assert apply(host, path).writes == 0


def test_mlx5_with_bound_vfs_unbinds_switches_and_rebinds(host, write_config):
    SimKernel(host.root).add_fault("eswitch_needs_vfs", device=CX5)
    apply(host, write_config('[[pf]]\nname = "ens3f0"\nnum_vfs = 2\n'))
    report = apply(host, write_config('[[pf]]\nname = "ens3f0"\nnum_vfs = 2\neswitch_mode = "switchdev"\n'))
    assert report.exit_code == 0, report.outcomes[0].error
    assert [a["op"] for a in report.outcomes[0].actions] == [
        "unbind_driver", "unbind_driver", "set_eswitch_mode", "probe_default_driver", "probe_default_driver"]


# Every transition of (count, mode), on every simulated PF driver with an eswitch, with the
# driver keeping its mode over a disable (in-tree 6.1 ice, mlx5 since 6.0) and resetting it to
# legacy (mlx5 before 6.0, Intel's out-of-tree ice; netdevsim, proved in tests/lab): one apply
# converges, read back from the kernel, and the next apply writes nothing.
ESWITCH_PFS = {
    "ice": (E810, "ens2f0", ()),
    "mlx5": (CX5, "ens3f0", ()),
    "mlx5-old": (CX5, "ens3f0", ("eswitch_needs_vfs",)),  # before ~5.3: a mode only with VFs
}
ESWITCH_TRANSITIONS = [  # (count, mode) before -> after
    ((4, "legacy"), (4, "switchdev")),  # the mode alone
    ((4, "switchdev"), (4, "legacy")),
    ((4, "legacy"), (2, "switchdev")),  # count down and the mode
    ((2, "legacy"), (4, "switchdev")),  # count up and the mode
    ((4, "switchdev"), (2, "legacy")),
    ((2, "switchdev"), (3, "legacy")),
    ((4, "switchdev"), (2, "switchdev")),  # the count alone, through 0
    ((2, "switchdev"), (4, "switchdev")),
    ((0, "legacy"), (3, "switchdev")),  # up from 0: no disable
    ((0, "switchdev"), (3, "switchdev")),
    ((4, "switchdev"), (0, "switchdev")),  # down to 0
    ((4, "legacy"), (0, "switchdev")),
    ((4, "switchdev"), (0, "legacy")),
]


def _eswitch_config(name, count, mode):
    return f'[[pf]]\nname = "{name}"\nnum_vfs = {count}\neswitch_mode = "{mode}"\n'


@pytest.mark.parametrize("resets", [False, True], ids=["keeps", "resets"])
@pytest.mark.parametrize("before,after", ESWITCH_TRANSITIONS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("driver", sorted(ESWITCH_PFS))
def test_every_eswitch_transition_converges_in_one_apply(host, write_config, driver, before, after, resets):
    pci, name, faults = ESWITCH_PFS[driver]
    if "eswitch_needs_vfs" in faults and 0 in (before[0], after[0]):
        pytest.skip("old mlx5 has no eswitch mode without VFs")
    kernel = SimKernel(host.root)
    for fault in faults + (("eswitch_resets",) if resets else ()):
        kernel.add_fault(fault, device=pci)
    first = apply(host, write_config(_eswitch_config(name, *before)))
    assert first.exit_code == 0, first.outcomes[0].error
    h = open_host(host.root)
    assert (h.sysfs.num_vfs(pci), h.devlink.eswitch_mode(f"pci/{pci}")) == before
    report = apply(host, write_config(_eswitch_config(name, *after)))
    assert report.exit_code == 0, report.outcomes[0].error
    h = open_host(host.root)
    assert (h.sysfs.num_vfs(pci), h.devlink.eswitch_mode(f"pci/{pci}")) == after
    assert not kernel.consistency_problems()
    again = apply(host, write_config(_eswitch_config(name, *after)))
    assert again.exit_code == 0 and again.writes == 0, again.outcomes[0].actions


def test_a_resize_sets_the_mode_after_the_disable_that_reset_it(host, write_config):
    """The case seen on a real kernel: 4 VFs in legacy, then 2 in switchdev; and a resize in switchdev."""
    SimKernel(host.root).add_fault("eswitch_resets", device=E810)
    apply(host, write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 4\n'))
    report = apply(host, write_config(_eswitch_config("ens2f0", 2, "switchdev")))
    assert report.exit_code == 0, report.outcomes[0].error
    assert [(a["op"], a.get("value")) for a in report.outcomes[0].actions] == [
        ("set_num_vfs", 0), ("set_eswitch_mode", "switchdev"), ("set_num_vfs", 2)]
    report = apply(host, write_config(_eswitch_config("ens2f0", 3, "switchdev")))  # the mode does not differ
    assert report.exit_code == 0, report.outcomes[0].error
    assert [(a["op"], a.get("value")) for a in report.outcomes[0].actions] == [
        ("set_num_vfs", 0), ("set_eswitch_mode", "switchdev"), ("set_num_vfs", 3)]


def test_a_disable_resets_the_simulated_eswitch_only_where_the_driver_does(host):
    h = open_host(host.root)
    SimKernel(host.root).add_fault("eswitch_resets", device=CX5)
    for pci in (E810, CX5):
        h.devlink.set_eswitch_mode(f"pci/{pci}", "switchdev")
        h.sysfs.set_num_vfs(pci, 2)
        h.sysfs.set_num_vfs(pci, 0)
    assert h.devlink.eswitch_mode(f"pci/{E810}") == "switchdev"  # in-tree ice keeps it
    assert h.devlink.eswitch_mode(f"pci/{CX5}") == "legacy"
    h.sysfs.set_num_vfs(E810, 2)
    h.devlink.set_eswitch_mode(f"pci/{E810}", "switchdev")  # its own mode, with VFs: 0, as ice answers
    with pytest.raises(OSError) as exc:
        h.devlink.set_eswitch_mode(f"pci/{E810}", "legacy")
    assert exc.value.errno == errno.EOPNOTSUPP


class EswitchModel:
    """A PF driver's count and eswitch as its kernel source has them, to run a plan's count phase on.

    netdevsim (not in the simulated host) changes the mode at any time and goes back to legacy on
    a disable (Linux 6.1 drivers/net/netdevsim/dev.c); ice only changes it without VFs; a driver
    the planner does not know is taken to be as strict as both.
    """

    RULES = {"netdevsim": ("any", True), "ice": ("no_vfs", False), "mlx5_core": ("any", False),
             "unknown_nic": ("no_vfs", True)}

    def __init__(self, driver, count, mode, resets=None):
        self.rule, self.resets = self.RULES[driver]
        self.resets = self.resets if resets is None else resets
        self.count, self.mode = count, mode

    def run(self, action):
        if isinstance(action, SetNumVfs):
            if self.count and action.value and action.value != self.count:
                raise OSError(errno.EBUSY, "N over M")
            if self.count and not action.value and self.resets:
                self.mode = "legacy"
            self.count = action.value
        elif isinstance(action, SetEswitchMode) and action.value != self.mode:
            if self.rule == "no_vfs" and self.count:
                raise OSError(errno.EOPNOTSUPP, "Changing eswitch mode is allowed only if there is no VFs created")
            self.mode = action.value


def _model_state(driver, count, mode):
    bus = "netdevsim" if driver == "netdevsim" else "pci"
    vfs = tuple(VfState(i, f"vf{i}", None if bus != "pci" else "iavf", None) for i in range(count))
    return PfState(pci="netdevsim10" if bus != "pci" else E810, vendor=None, device=None, driver=driver,
                   netdevs=("eth0",), mac=None, total_vfs=64, num_vfs=count, autoprobe=None, vf_device=None,
                   vfs=vfs, bus=bus, eswitch_mode=mode)


@pytest.mark.parametrize("resets", [False, True], ids=["keeps", "resets"])
@pytest.mark.parametrize("before,after", ESWITCH_TRANSITIONS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("driver", sorted(EswitchModel.RULES))
def test_the_count_phase_leaves_every_driver_in_the_wanted_mode(driver, before, after, resets):
    spec = PfSpec(key="pf[0]", selector=PfSelector(name="eth0"), num_vfs=after[0], eswitch_mode=after[1])
    model = EswitchModel(driver, *before, resets=resets)
    the_plan = plan_pf(Target(spec, _model_state(driver, *before)), frozenset({"iavf"}))
    for action in the_plan.actions:
        model.run(action)
    assert (model.count, model.mode) == after, [a.describe() for a in the_plan.actions]
    assert plan_pf(Target(spec, _model_state(driver, *after)), frozenset({"iavf"})).actions == ()


def test_a_pf_driver_without_switchdev_says_so(host, write_config):
    report = apply(host, write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 0\neswitch_mode = "switchdev"\n'))
    assert report.exit_code == 1
    assert "i40e has no eswitch mode" in report.outcomes[0].error and report.writes == 0


def test_switchdev_rates_go_through_devlink(host, write_config):
    report = apply(host, write_config('[[pf]]\nname = "ens3f0"\nnum_vfs = 1\neswitch_mode = "switchdev"\n'
                                      '  [[pf.vfs]]\n  range = "0"\n  max_tx_rate = 100\n'))
    assert report.exit_code == 1 and "in switchdev mode" in report.outcomes[0].error


# ---------------------------------------------------------------------------- ownership and autoprobe


def test_externally_managed_never_writes_numvfs_but_configures_the_vfs(host, write_config):
    h = open_host(host.root)
    h.sysfs.set_num_vfs(E810, 3)  # another tool made them
    path = write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 2\nexternally_managed = true\n'
                        '  [[pf.vfs]]\n  range = "0-1"\n  vlan = 9\n')
    report = apply(host, path)
    assert report.exit_code == 0, report.outcomes[0].error
    assert not [p for p, _, _ in sim_writes(host)[1:] if p.endswith("sriov_numvfs")]
    assert h.sysfs.num_vfs(E810) == 3 and [vf_settings(host, "ens2f0")[i].vlan for i in range(3)] == [9, 9, 0]
    body = json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)
    (vfs,) = [pf["vfs"] for pf in body["pfs"] if pf["name"] == "ens2f0"]
    assert [(vf["matches"], vf["desired_driver"], vf["note"]) for vf in vfs] == [
        (True, "the kernel's default driver", None), (True, "the kernel's default driver", None),
        (None, None, "beyond num_vfs: left as it is (externally managed)")]
    too_many = write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 5\nexternally_managed = true\n')
    report = apply(host, too_many)
    assert report.exit_code == 1 and "needs at least 5" in report.outcomes[0].error
    assert h.sysfs.num_vfs(E810) == 3


# what an externally managed PF short of VFs asks beside its count: each is applied, and the run fails
SHORT_BESIDE = {
    "mtu": ("mtu = 9000\n", ""),
    "autoprobe": ("drivers_autoprobe = false\n", '  [[pf.vfs]]\n  range = "0-3"\n  driver = "none"\n'),
    "vf settings": ("", '  [[pf.vfs]]\n  range = "0-1"\n  vlan = 9\n  trust = true\n'),
    "vf driver": ("", '  [[pf.vfs]]\n  range = "1"\n  driver = "none"\n'),
}


@pytest.mark.parametrize("change", sorted(SHORT_BESIDE))
def test_an_externally_managed_pf_short_of_vfs_fails_in_the_dry_run_as_in_the_run(host, write_config, change):
    """A difference no action can fix (the count another tool owns) makes the run fail after what it
    could do: the dry run predicts that outcome and exit code, whatever else the plan does, and the
    run's error says the count is not sriov-node's to change (not "re-run apply")."""
    h = open_host(host.root)
    h.sysfs.set_num_vfs(E810, 2)  # another tool made 2; the block needs 4
    pf_keys, groups = SHORT_BESIDE[change]
    path = write_config('[[pf]]\nname = "ens2f0"\nnum_vfs = 4\nexternally_managed = true\n' + pf_keys + groups)
    dry = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    assert dry["pfs"][0]["actions"], dry  # something to do beside the count
    assert (dry["result"], dry["exit_code"], dry["pfs"][0]["status"]) == ("failed", 1, "failed"), dry
    assert "may not change it" in dry["pfs"][0]["error"] and "needs at least 4" in dry["pfs"][0]["error"]
    ran = run_cli("apply", "--json", root=host.root, config=path)
    body = json.loads(ran.stdout)
    assert (body["result"], ran.returncode, body["pfs"][0]["status"]) == ("failed", 1, "failed"), body
    assert body["writes"] > 0 and h.sysfs.num_vfs(E810) == 2  # what it could do, done; never the count
    assert "may not change it" in body["pfs"][0]["error"] and "re-run" not in body["pfs"][0]["error"]
    again = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    assert (again["result"], again["exit_code"], again["pfs"][0]["actions"]) == ("failed", 1, [])


def test_drivers_autoprobe_false_is_kept(host, write_config):
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\ndrivers_autoprobe = false\n'
                        '  [[pf.vfs]]\n  range = "0"\n  driver = "vfio-pci"\n  [[pf.vfs]]\n  range = "1"\n  driver = "none"\n')
    assert apply(host, path).exit_code == 0
    h = open_host(host.root)
    assert h.sysfs.autoprobe(X710) is False
    assert apply(host, path).writes == 0
