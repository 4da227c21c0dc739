"""The executor writes nothing the plan does not show.

Every write the host receives (sysfs stores, module loads, netlink and devlink sets) is counted by
kind, by wrapping the host's write capabilities, and compared with the plan's actions: on a clean
run the writes are exactly the actions' own (`Action.writes()`); the extra writes of a retry (the
second sriov_numvfs write, the unbind after a probe race, the default driver's modprobe or bind
file) happen only under a rule the action carries (`Action.retries()`), which `apply --dry-run`
shows in JSON ("retry") and text ("[retry]").
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from typing import List

import pytest

from sriov_node.config import load_config
from sriov_node.engine.actions import (
    BIND_FILE,
    DEFAULT_BIND_FILE,
    DEFAULT_TAKEN,
    LOAD_DEFAULT,
    NUMVFS_AGAIN,
    PROBE_RACE,
    SEND_REST,
    LoadDriver,
    SetVfSetting,
)
from sriov_node.engine.reconcile import reconcile
from sriov_node.host import PCI_DEVICES
from tests.helpers import open_host
from sriov_node.sim.kernel import SimKernel
from tests.helpers import run_cli

PF0, CX5, IB = "0000:20:00.0", "0000:30:00.0", "0000:40:00.0"


def record_writes(host) -> Counter:
    """Wrap every write capability of `host`; the Counter fills with the kinds of write it receives."""
    seen: Counter = Counter()

    def wrap(obj, name, kind):
        real = getattr(obj, name)

        def counted(*args, **kwargs):
            seen[kind(*args)] += 1
            return real(*args, **kwargs)

        setattr(obj, name, counted)

    wrap(host.sysfs, "write", lambda base, parts, value: parts[-1])
    wrap(host.modules, "load", lambda name, *rest: "modprobe")
    wrap(host.links, "set_vf_links", lambda ifname, changes: "vf_links")
    wrap(host.links, "set_mtu", lambda ifname, mtu: "mtu")
    wrap(host.devlink, "set_eswitch_mode", lambda handle, mode: "eswitch")
    return seen


def own_writes(actions) -> Counter:
    """What the actions write without a retry (consecutive VF settings go out as one request)."""
    out: Counter = Counter()
    previous = None
    for a in actions:
        if not (isinstance(a, SetVfSetting) and isinstance(previous, SetVfSetting)):
            out.update(a.writes())
        previous = a
    return out


def allowed_writes(actions) -> Counter:
    """The most the actions may write: their own, and each retry rule's writes once per action
    (once per setting for SEND_REST)."""
    out: Counter = Counter()
    for a in actions:
        out.update(a.writes())
        for rule in a.retries():
            for _ in range(len(a.values) if rule is SEND_REST else 1):
                out.update(rule.writes)
    return out


def run(host, path):
    seen = record_writes(host)
    report = reconcile(host, load_config(path), timeout=5)
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    actions = [a for p in report.plans for a in p.actions]
    assert sum(seen.values()) == report.writes  # every write went through a wrapped capability
    return report, actions, seen


def _unload(host, driver):
    """rmmod: the driver's devices are unbound, its directory goes."""
    kernel = SimKernel(host.root)
    for dev in host.sysfs.listdir(PCI_DEVICES):
        if host.sysfs.device_driver(dev) == driver:
            host.sysfs.unbind(dev, driver)
    shutil.rmtree(host.path("sys/bus/pci/drivers", driver))
    assert not kernel._loaded(driver)


def _create(make_host):
    return make_host(("x710", 1, None), ("cx5", 1, None), ("cx6-ib", 1, None))


def _prepared(host, write_config):
    report = reconcile(host, load_config(write_config(EVERYTHING)), timeout=5)
    assert report.exit_code == 0, [o.error for o in report.outcomes]


EVERYTHING = (f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\nmtu = 9000\n'
              '[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'
              '[[pf.vfs]]\nrange = "2"\nvlan = 10\ntrust = true\nmac = "02:00:00:00:00:02"\n'
              '[[pf.vfs]]\nrange = "3"\nmtu = 9000\n'
              f'[[pf]]\npci = "{CX5}"\nnum_vfs = 2\neswitch_mode = "switchdev"\n')

# (name, set-up of the host before the run, the config); together they plan every kind of action
SCENARIOS = {
    "create: a driver to load, autoprobe gate, overrides, binds, settings, MTUs, eswitch": (None, EVERYTHING),
    "resize through 0": (_prepared, EVERYTHING.replace("num_vfs = 4", "num_vfs = 6", 1)),
    "rebind existing VFs: override cleared, unbind, probe, none": (
        _prepared, EVERYTHING.replace('range = "0-1"\ndriver = "vfio-pci"', 'range = "0"\ndriver = "none"')),
    "eswitch back to legacy with VFs bound": (_prepared, EVERYTHING.replace('"switchdev"', '"legacy"')),
    "a stale virtfn link: replug": ("stale", f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n'),
    "the known default driver is not loaded: planned load": ("unloaded", f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'),
    "InfiniBand GUIDs for bound VFs: unbind, set, bind again": (
        "ib", f'[[pf]]\npci = "{IB}"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\nguid = "auto"\n'),
}


def _setup(make_host, write_config, how):
    host = _create(make_host)
    if how is _prepared:
        _prepared(host, write_config)
    elif how == "stale":
        SimKernel(host.root).show_vf_remove()
        host.sysfs.set_num_vfs(PF0, 4)
        host.sysfs.write(PCI_DEVICES, (host.sysfs.vf_address(PF0, 1), "remove"), "1\n")
    elif how == "ib":
        host.sysfs.set_num_vfs(IB, 2)  # bound to mlx5_core by the kernel, no GUIDs yet
    elif how == "unloaded":
        host.sysfs.set_num_vfs(PF0, 2)
        _unload(host, "iavf")
    return open_host(host.root)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_clean_run_writes_exactly_the_planned_actions(make_host, write_config, name):
    how, text = SCENARIOS[name]
    host = _setup(make_host, write_config, how)
    report, actions, seen = run(host, write_config(text))
    assert actions, "the scenario plans something"
    own = own_writes(actions)
    # no more than the actions' own writes (fewer only where one finds its work done: a probe of a
    # VF the driver's load bound already), and the count and binding writes exactly
    assert {k: n for k, n in seen.items() if n > own[k]} == {}, [a.describe() for a in actions]
    exact = ("sriov_numvfs", "sriov_drivers_autoprobe", "driver_override", "unbind", "bind", "remove", "rescan",
             "modprobe", "eswitch", "mtu", "vf_links")
    assert {k: seen[k] for k in exact} == {k: own[k] for k in exact}


def test_the_scenarios_plan_every_kind_of_action(make_host, write_config):
    from sriov_node.engine import actions as mod

    kinds = {cls for cls in vars(mod).values() if isinstance(cls, type) and issubclass(cls, mod.Action)
             and cls is not mod.Action}
    planned = set()
    for name, (how, text) in SCENARIOS.items():
        host = _setup(make_host, write_config, how)
        report = reconcile(host, load_config(write_config(text)), dry_run=True)
        planned |= {type(a) for p in report.plans for a in p.actions}
    assert planned == kinds


def test_a_known_default_driver_that_is_not_loaded_is_a_planned_load(make_host, write_config):
    host = _setup(make_host, write_config, "unloaded")
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root,
                              config=write_config(SCENARIOS["the known default driver is not loaded: planned load"][1])).stdout)
    assert body["actions"][0] == {"pf": PF0, "op": "load_driver", "driver": "iavf", "phase": "modules"}
    probes = [a for a in body["actions"] if a["op"] == "probe_default_driver"]
    assert len(probes) == 2 and all(LOAD_DEFAULT.text not in a["retry"] for a in probes)  # planned, no rule
    _, actions, seen = run(open_host(host.root), write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'))
    assert LoadDriver(PF0, driver="iavf", default=True) in actions and seen["modprobe"] == 1


def _within(seen: Counter, actions) -> List[str]:
    allowed = allowed_writes(actions)
    return [f"{kind}: {n} written, {allowed[kind]} allowed" for kind, n in seen.items() if n > allowed[kind]]


def test_the_second_numvfs_write_is_the_rule_set_num_vfs_carries(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("write_ignored", device=PF0, attr="sriov_numvfs", nth=1)
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n')
    dry = run_cli("apply", "--dry-run", "--json", root=host.root, config=path)
    (numvfs,) = [a for a in json.loads(dry.stdout)["actions"] if a["op"] == "set_num_vfs"]
    assert numvfs["retry"] == NUMVFS_AGAIN.text
    text = run_cli("apply", "--dry-run", root=host.root, config=path).stdout
    assert f"[retry] sriov_numvfs: {NUMVFS_AGAIN.short} (--verbose spells them out)" in text
    verbose = run_cli("apply", "--dry-run", "--verbose", root=host.root, config=path).stdout
    assert f"[retry] sriov_numvfs 0 -> 4: {NUMVFS_AGAIN.text}" in verbose
    _, actions, seen = run(open_host(host.root), path)
    assert seen["sriov_numvfs"] == 2 == own_writes(actions)["sriov_numvfs"] + 1  # the rule fired
    assert _within(seen, actions) == []


def test_the_unbind_after_a_probe_race_is_the_rule_bind_driver_carries(make_host, write_config):
    host = open_host(make_host().root)
    kernel = host.sysfs.kernel  # the other tool's writes go to the kernel, not through the counted host
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "iavf"\n')
    seen = record_writes(host)
    real_probe = host.sysfs.drivers_probe
    raced = []

    def racing_probe(pci):
        if not raced and pci != PF0:  # another tool binds the VF to vfio-pci just before our probe
            raced.append(pci)
            if not host.sysfs.has_pci_driver("vfio-pci"):
                kernel.load_module("vfio-pci")
            kernel.write(f"sys/bus/pci/devices/{pci}/driver_override", b"vfio-pci\n")
            kernel.write("sys/bus/pci/drivers_probe", f"{pci}\n".encode())
            kernel.write(f"sys/bus/pci/devices/{pci}/driver_override", b"iavf\n")
        return real_probe(pci)

    host.sysfs.drivers_probe = racing_probe
    report = reconcile(host, load_config(path), timeout=5)
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    actions = [a for p in report.plans for a in p.actions]
    assert raced and seen["unbind"] == own_writes(actions)["unbind"] + 1  # the rule fired
    assert _within(seen, actions) == []
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root,
                              config=write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'
                                                  '[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n')).stdout)
    binds = [a for a in body["actions"] if a["op"] == "bind_driver"]
    assert binds and all(a["retry"] == f"{PROBE_RACE.text}; {BIND_FILE.text}" for a in binds)


def test_every_rule_is_shown_by_the_dry_run_in_json_and_text(make_host, write_config):
    host = make_host(vfio_loaded=True)
    SimKernel(host.root).forget_module_aliases()  # the VFs' default driver is not known: LOAD_DEFAULT's case
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'
                        '[[pf.vfs]]\nrange = "2"\nvlan = 10\n')
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    every = (NUMVFS_AGAIN, PROBE_RACE, BIND_FILE, DEFAULT_TAKEN, LOAD_DEFAULT, DEFAULT_BIND_FILE, SEND_REST)
    shown = {part for a in body["actions"] if "retry" in a for part in a["retry"].split("; ")}
    assert shown == {rule.text for rule in every}
    for flags, words in (((), "short"), (("--verbose",), "text")):  # in a few words, or spelt out
        text = run_cli("apply", "--dry-run", *flags, root=host.root, config=path).stdout
        lines = [line for line in text.splitlines() if line.strip().startswith("[retry]")]
        assert all(any(getattr(rule, words) in line for line in lines) for rule in every), text


def test_a_write_no_action_or_rule_declares_is_caught(make_host, write_config, monkeypatch):
    """The accounting itself: the same run with the second sriov_numvfs write undeclared fails it."""
    from sriov_node.engine.actions import SetNumVfs

    host = make_host()
    SimKernel(host.root).add_fault("write_ignored", device=PF0, attr="sriov_numvfs", nth=1)

    real = SetNumVfs.retries
    _, actions, seen = run(open_host(host.root), write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n'))
    monkeypatch.setattr(SetNumVfs, "retries", lambda self: ())
    assert _within(seen, actions) == ["sriov_numvfs: 2 written, 1 allowed"]
    monkeypatch.setattr(SetNumVfs, "retries", real)
    assert _within(seen, actions) == []


@pytest.mark.parametrize("num_vfs", (2, 4), ids=("same count", "resize"))
def test_a_default_driver_that_fails_to_load_fails_its_vfs_and_the_rest_of_the_plan_goes_on(
        make_host, write_config, num_vfs):
    """The default driver is known (modules.alias) but its module is gone: the planned load fails,
    and that is the default-driver VFs' failure, with modprobe's reason, not the whole PF's."""
    host = _setup(make_host, write_config, "unloaded")  # 2 VFs, iavf known from modules.alias, not loaded
    SimKernel(host.root).add_fault("module_missing", module="iavf")  # its file went missing since depmod
    text = f'[[pf]]\npci = "{PF0}"\nnum_vfs = {num_vfs}\n[[pf.vfs]]\nrange = "0"\ndriver = "vfio-pci"\n'
    report = reconcile(open_host(host.root), load_config(write_config(text)), timeout=5)
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and "iavf" in outcome.error and "not found" in outcome.error, outcome.error
    host = open_host(host.root)
    assert host.sysfs.num_vfs(PF0) == num_vfs  # the count went on
    vf0 = host.sysfs.vf_address(PF0, 0)
    assert host.sysfs.device_driver(vf0) == "vfio-pci"  # and so did the named driver's VF
    failed = {e.get("vf") for e in outcome.errors}
    assert failed - {None} == set(range(1, num_vfs)), outcome.errors  # each default-driver VF says why


VF_OWN_DRIVER = sorted(k for k, m in __import__("sriov_node.sim.nics", fromlist=["NICS"]).NICS.items()
                       if m.vf_driver != m.pf_driver)


@pytest.mark.parametrize("nic", VF_OWN_DRIVER)
def test_vfs_a_run_creates_get_their_default_driver_when_it_is_not_loaded(make_host, write_config, nic):
    """The kernel's autoprobe binds only a loaded driver (loading it on the VF's modalias is udev's):
    VFs created on a node whose VF driver is not loaded (no udevd yet, or rmmod) are bound by the
    first run, which loads the driver (modules.alias names it) before it writes the count."""
    from sriov_node.sim.nics import NICS

    host = make_host((nic, 1, None))
    vf_driver = NICS[nic].vf_driver
    _unload(host, vf_driver)
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    ops = [a["op"] for a in body["actions"]]
    assert ops.index("load_driver") < ops.index("set_num_vfs"), ops
    done = run_cli("apply", root=host.root, config=path)
    assert done.returncode == 0, done.stdout + done.stderr
    again = open_host(host.root)
    assert [again.sysfs.device_driver(again.sysfs.vf_address(PF0, i)) for i in range(2)] == [vf_driver] * 2


def test_a_pf_without_its_driver_gets_no_module_loaded_for_its_vfs(make_host, write_config):
    """The operator unloaded the PF's driver (rmmod): a run loads nothing on its behalf (the VFs'
    default driver may be the PF's own, as nvme's and mlx5_core's are); the count it cannot write is
    explained instead."""
    host = make_host(("nvme", 1, None))
    _unload(host, "nvme")
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    body = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    assert "load_driver" not in [a["op"] for a in body["actions"]], body["actions"]
    done = run_cli("apply", "--json", root=host.root, config=path)
    assert done.returncode == 1
    assert "no driver is bound to the PF" in done.stdout + done.stderr
    assert open_host(host.root).sysfs.device_driver(PF0) is None
