"""The driver table (sriov_node/drivers.py) over its whole domain: every refusal a row implies is
refused whole by `validate`, `apply --dry-run` and `apply` (exit 1, the key and the fix named, not
one write, no generation), and the simulated kernel refuses the same step with the errno the row
predicts. The cases come from the table itself, so a new row is tested by being added."""

from __future__ import annotations

import errno
import json
import os
from typing import Dict, List, Optional, Tuple

import pytest

from sriov_node import drivers
from sriov_node.model import SETTING_ATTR, VF_LINK_ATTRS, VF_SETTING_KEYS, VfLinks
from sriov_node.sim.build import create_host
from sriov_node.sim.nics import NICS
from tests.helpers import PF0, open_host, run_cli, sim_digest

# Rows the simulator has no NIC for: judged here from the table alone (the lab runs netdevsim).
NOT_SIMULATED = {"netdevsim"}


def _nic_for(row: drivers.Driver) -> Optional[str]:
    """A simulated NIC whose PF (or, for a VF driver, whose VFs) use this row's driver."""
    for key, nic in NICS.items():
        if (nic.pf_driver if row.role != "vf" else nic.vf_driver) == row.name:
            return key
    return None


CASES = [pytest.param(row.name, case, id=f"{row.name}-{case.label}")
         for row in drivers.DRIVERS.values() for case in drivers.implied_refusals(row)]


def test_every_row_is_simulated_or_named_here():
    missing = {row.name for row in drivers.DRIVERS.values() if _nic_for(row) is None}
    assert missing == NOT_SIMULATED
    assert len(CASES) >= 20


def _config(case: drivers.Case, row: drivers.Driver) -> str:
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = ['[[pf]]', f'pci = "{PF0}"', "num_vfs = 2"]
    lines += [f"{k} = {value(v)}" for k, v in case.pf.items()]
    group = dict(case.vf)
    if row.role == "vf":
        group["driver"] = row.name
    if group:
        lines += ["  [[pf.vfs]]", '  range = "0-1"'] + [f"  {k} = {value(v)}" for k, v in group.items()]
    return "\n".join(lines) + "\n"


_HOSTS: Dict[str, str] = {}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """One simulated host per NIC model, built once: nothing is ever written to them."""

    def get(nic: str) -> str:
        if nic not in _HOSTS:
            root = str(tmp_path_factory.mktemp(nic) / "host")
            create_host(root, ((nic, 1, None),))
            _HOSTS[nic] = root
        return _HOSTS[nic]

    yield get
    _HOSTS.clear()


def _set_speed(root: str, speed: Optional[int], pf_down: bool = False) -> Optional[str]:
    """The PF's link as the kernel shows it (`speed`, -1: down; `pf_down`: the netdev administratively
    down, which the kernel shows as a `speed` it cannot read and `flags` without IFF_UP); returns
    what `speed` was."""
    path = os.path.join(root, "sys/class/net/ens1f0/speed")
    if pf_down:
        old = open(path).read()
        os.unlink(path)
        with open(os.path.join(root, "sys/class/net/ens1f0/flags"), "w") as fh:
            fh.write("0x1002\n")
        return old
    if speed is None:
        return None
    old = open(path).read()
    if speed is not None:
        os.chmod(path, 0o644)
        with open(path, "w") as fh:
            fh.write(f"{speed}\n")
    return old


@pytest.mark.parametrize("name,case", CASES)
def test_each_refusal_the_table_implies_is_refused_whole(hosts, tmp_path, name, case):
    row = drivers.DRIVERS[name]
    nic = _nic_for(row)
    if nic is None:
        assert name in NOT_SIMULATED
        pytest.skip(f"{name}: no simulated NIC (judged from the table in test_unsimulated_rows_refuse)")
    root = hosts(nic)
    old = _set_speed(root, case.link_speed, case.pf_down)
    config = tmp_path / "config.toml"
    config.write_text(_config(case, row))
    try:
        before = sim_digest(root)
        for argv in (["validate"], ["apply", "--dry-run", "--detailed-exitcode"], ["apply", "--dry-run"],
                     ["apply"]):
            done = run_cli(*argv, root=root, config=str(config))
            assert done.returncode == 1, (argv, done.stdout, done.stderr)
            assert "Fix:" in done.stderr and f"PF {PF0}" in done.stderr, (argv, done.stderr)
            keys = set(case.pf) | set(case.vf) | ({"mtu"} if case.label == "vf_mtu" else set())
            assert any(f".{k} = " in done.stderr for k in keys), (argv, done.stderr)
        assert sim_digest(root) == before  # not one write
        history = json.loads(run_cli("history", "--json", root=root, config=str(config)).stdout)
        assert history["generations"] == [], history  # apply recorded nothing
    finally:
        if case.pf_down:
            os.unlink(os.path.join(root, "sys/class/net/ens1f0/flags"))
        if case.link_speed is not None or case.pf_down:
            with open(os.path.join(root, "sys/class/net/ens1f0/speed"), "w") as fh:
                fh.write(old or "")


def _links(case: drivers.Case) -> Dict[str, object]:
    """The case's VF settings as netlink attributes, as the plan sends them."""
    out: Dict[str, object] = {}
    links = VfLinks(**{k: v for k, v in case.vf.items() if k in VF_SETTING_KEYS})
    out.update(links.wanted())
    return out


@pytest.mark.parametrize("name,case", [c for c in CASES if _nic_for(drivers.DRIVERS[c.values[0]]) is not None])
def test_the_simulated_driver_refuses_what_the_table_predicts(tmp_path, name, case):
    """Cross-check: the same step sent straight to the simulated kernel fails with the errno the
    table's judgement names (the two read the same row, through different code)."""
    row = drivers.DRIVERS[name]
    nic = _nic_for(row)
    root = str(tmp_path / "host")
    create_host(root, ((nic, 1, None),))
    _set_speed(root, case.link_speed, case.pf_down)
    host = open_host(root)
    pf = PF0
    if case.pf.get("eswitch_mode") and row.eswitch is None:
        with pytest.raises(OSError) as exc:
            host.devlink.set_eswitch_mode(f"pci/{pf}", "switchdev")
        assert exc.value.errno == getattr(errno, drivers.eswitch_refusal(row, "switchdev").errno)
        return
    if "mtu" in case.pf:
        with pytest.raises(OSError) as exc:
            host.links.set_mtu("ens1f0", case.pf["mtu"])
        assert exc.value.errno == errno.EINVAL
        assert drivers.mtu_refusal(row, case.pf["mtu"]).errno == "EINVAL"
        return
    host.sysfs.set_num_vfs(pf, 2)
    if case.label == "vf_mtu":
        vf = host.sysfs.vf_address(pf, 0)
        netdevs = os.listdir(os.path.join(root, "sys/bus/pci/devices", vf, "net"))
        with pytest.raises(OSError) as exc:
            host.links.set_mtu(netdevs[0], case.vf["mtu"])
        assert exc.value.errno == errno.EINVAL
        return
    if case.pf.get("eswitch_mode"):
        host.devlink.set_eswitch_mode(f"pci/{pf}", case.pf["eswitch_mode"])
    change = _links(case)
    predicted = drivers.setting_refusals(row, 0, {k: v for k, v in case.vf.items()}, pf_id=f"{NICS[nic].vendor}:"
                                         f"{NICS[nic].device}", switchdev=case.pf.get("eswitch_mode") == "switchdev",
                                         link_speed=-1 if case.pf_down else
                                         case.link_speed if case.link_speed is not None else NICS[nic].speed)
    assert predicted, case
    with pytest.raises(OSError) as exc:
        host.links.set_vf_links("ens1f0", [(0, change)])
    assert exc.value.errno in {getattr(errno, r.errno) for r in predicted}, (predicted, exc.value)


@pytest.mark.parametrize("name", sorted(NOT_SIMULATED))
def test_unsimulated_rows_refuse(name):
    row = drivers.DRIVERS[name]
    for case in drivers.implied_refusals(row):
        refusals: List[drivers.Refusal] = []
        if "mtu" in case.pf:
            refusals.append(drivers.mtu_refusal(row, case.pf["mtu"]))
        if case.pf.get("eswitch_mode"):
            found = drivers.eswitch_refusal(row, case.pf["eswitch_mode"])
            refusals += [found] if found else []
        refusals += drivers.setting_refusals(row, 0, dict(case.vf), switchdev=case.pf.get("eswitch_mode") == "switchdev",
                                             link_speed=case.link_speed)
        assert [r for r in refusals if r], (name, case)


def test_the_setting_names_are_listed_once():
    from sriov_node import config
    from sriov_node.engine import hints

    assert config.VF_LINK_KEYS is VF_SETTING_KEYS
    assert set(SETTING_ATTR) == set(VF_SETTING_KEYS) and set(SETTING_ATTR.values()) == set(VF_LINK_ATTRS)
    assert set(hints.SETTING_WORDS) == set(VF_LINK_ATTRS)
    for row in drivers.DRIVERS.values():
        assert row.settings <= set(VF_SETTING_KEYS), row.name


def test_the_eswitch_order_is_the_tables():
    from sriov_node.engine.plan import eswitch_order
    from sriov_node.model import PfState

    def pf(driver):
        return PfState("0000:01:00.0", "8086", "0000", driver, (), None, 8, 0, True, None)

    assert [eswitch_order(pf(d)) for d in ("ice", "mlx5_core", "netdevsim", "i40e", "nosuch")] == \
        ["no_vfs", "vfs_unbound", "any", drivers.ESWITCH_DEFAULT_ORDER, drivers.ESWITCH_DEFAULT_ORDER]


def _two_cases(tmp_path) -> Tuple[str, str]:
    root = str(tmp_path / "host")
    create_host(root, (("x710", 1, None),))
    return root, str(tmp_path)


@pytest.mark.parametrize("text,words", [
    ('eswitch_mode = "switchdev"\n', ['pf[0].eswitch_mode = "switchdev"', "i40e has no eswitch mode",
                                       "drop eswitch_mode"]),
    ('  [[pf.vfs]]\n  range = "0-1"\n  driver = "iavff"\n',
     ['pf[0].vfs[0].driver = "iavff"', "this kernel has no module iavff", "fix the driver name"]),
])
def test_the_issue_cases_are_refused_by_all_three(tmp_path, text, words):
    """The two cases of issue 24, on an X710: both passed validate (0) and the dry run (2) before, and
    apply tore the VFs down (or recorded a failed generation)."""
    root, where = _two_cases(tmp_path)
    open_host(root).sysfs.set_num_vfs(PF0, 2)  # VFs exist: nothing may take them down
    config = os.path.join(where, "c.toml")
    with open(config, "w") as fh:
        fh.write('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n' + text)
    before = sim_digest(root)
    for argv in (["validate"], ["apply", "--dry-run", "--detailed-exitcode"], ["apply"]):
        done = run_cli(*argv, root=root, config=config)
        assert done.returncode == 1, (argv, done.stderr)
        for word in words:
            assert word in done.stderr, (argv, done.stderr)
    assert sim_digest(root) == before
    assert open_host(root).sysfs.num_vfs(PF0) == 2
    body = json.loads(run_cli("history", "--json", root=root, config=config).stdout)
    assert body["generations"] == [], body
    valid = json.loads(run_cli("validate", "--json", root=root, config=config).stdout)
    assert valid["valid"] is False and valid["refused"][0]["refusals"]


def test_a_driver_not_in_the_table_is_not_refused_but_named(tmp_path):
    root = str(tmp_path / "host")
    create_host(root, (("hisi-zip", 1, None),))
    config = str(tmp_path / "c.toml")
    with open(config, "w") as fh:
        fh.write('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 1\neswitch_mode = "switchdev"\n')
    done = run_cli("apply", "--dry-run", "--detailed-exitcode", root=root, config=config)
    assert done.returncode == 2, done.stderr  # changes pending: tried at apply
    assert "hisi_zip is not in sriov-node's driver table" in done.stderr
    assert "not known: tried at apply" in done.stderr
    assert run_cli("validate", root=root, config=config).returncode == 0


def test_a_value_is_judged_once_for_all_the_vfs_that_want_it(make_host, write_config, monkeypatch):
    # 64 VFs with one VLAN and two protocols: the row is asked once per distinct value, and every VF
    # that wants a refused value is named in the refusal all the same
    from sriov_node.config import load_config
    from sriov_node.engine.plan import plan_pf
    from sriov_node.engine.preflight import capabilities
    from sriov_node.engine.survey import survey

    host = make_host(("x710", 1, 64))
    desired = load_config(write_config(
        f'[[pf]]\npci = "{PF0}"\nnum_vfs = 64\n  [[pf.vfs]]\n  range = "0-31"\n  vlan = 10\n'
        '  [[pf.vfs]]\n  range = "32-63"\n  vlan = 10\n  vlan_proto = "802.1ad"\n'))
    (judged,) = survey(host, desired).judged
    asked = []
    plain = drivers.setting_refusals
    monkeypatch.setattr(drivers, "setting_refusals", lambda row, vf, *a, **k: asked.append(vf) or plain(row, vf, *a, **k))
    refused, _ = capabilities(host, plan_pf(judged.target, frozenset(), findings=judged.findings))
    assert asked == [0, 32]
    assert [(r.key, r.errno, r.vf) for r in refused] == [("vlan_proto", "EPROTONOSUPPORT", vf) for vf in range(32, 64)]
