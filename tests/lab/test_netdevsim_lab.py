"""VF settings, MTU and eswitch mode over rtnetlink and devlink, on Linux 6.1's netdevsim.

netdevsim is not PCI: its sriov_numvfs sits on the netdevsim bus device, its limit in debugfs,
and its VFs have no PCI functions (no driver to bind). The kernel's answers are read back with
iproute2 and devlink, independently of sriov-node.
"""

from __future__ import annotations

import json

import pytest

from tests.lab.conftest import boot


def pfs(run):
    return json.loads(run["stdout"])["pfs"]


def test_every_setting_reaches_the_kernel(netdevsim):
    run = netdevsim["apply_every"]
    assert run["rc"] == 0, run
    vfs = netdevsim["ip_after"]
    assert len(vfs) == 8, vfs
    vf0 = vfs[0]
    assert vf0["address"] == "02:aa:bb:cc:dd:00"
    assert vf0["vlan_list"] == [{"vlan": 100, "qos": 3, "protocol": "802.1ad"}]  # 16-byte vlan info, not pyroute2's 14
    assert vf0["spoofchk"] is False and vf0["trust"] is True and vf0["link_state"] == "disable"
    assert vf0["rate"] == {"max_tx": 100, "min_tx": 10}
    for vf in vfs[1:]:
        assert vf["vlan_list"][0]["vlan"] == 200 and vf["trust"] is True and vf["link_state"] == "enable"
    assert netdevsim["mtu_after"] == "9000"


def test_a_converged_pf_gets_no_netlink_set(netdevsim):
    run = netdevsim["apply_again"]
    assert run["rc"] == 0, run
    body = json.loads(run["stdout"])
    assert body["writes"] == 0 and body["pfs"][0]["status"] == "unchanged"
    (pf,) = [p for p in json.loads(netdevsim["status"]["stdout"])["pfs"] if p["bus"] == "netdevsim"] or [None]
    assert pf is None or pf["converged"] is True


def test_a_vf_changed_by_hand_is_put_back_in_one_request(netdevsim):
    assert netdevsim["by_hand"]["rc"] == 0
    run = netdevsim["apply_repair"]
    assert run["rc"] == 0, run
    actions = pfs(run)[0]["actions"]
    assert sorted(a["op"] for a in actions) == ["set_vf_trust", "set_vf_vlan"]
    vf3 = netdevsim["ip_repaired"][3]
    assert vf3["vlan_list"][0]["vlan"] == 200 and vf3["trust"] is True


def test_switchdev_through_devlink_and_the_eopnotsupp_path(netdevsim):
    switched = netdevsim["apply_switchdev_rates"]
    assert switched["rc"] == 0, switched
    assert [a["op"] for a in pfs(switched)[0]["actions"]] == ["set_eswitch_mode"]
    refused = netdevsim["apply_switchdev_new_rate"]  # legacy VF rates in switchdev mode: EOPNOTSUPP
    assert refused["rc"] == 1, refused
    (pf,) = pfs(refused)
    assert [e["errno"] for e in pf["errors"]] == ["EOPNOTSUPP"] and pf["errors"][0]["vf"] == 0
    assert "in switchdev mode" in pf["error"] and "devlink" in pf["error"]
    mode = json.loads(netdevsim["eswitch_show"]["stdout"])
    assert list(mode["dev"].values())[0]["mode"] == "switchdev"
    links = json.loads(netdevsim["representors"]["stdout"])
    assert sum(1 for link in links if link.get("phys_port_name", "").startswith("pf0vf")) == 8
    assert netdevsim["apply_switchdev"]["rc"] == 0, netdevsim["apply_switchdev"]
    legacy = netdevsim["apply_legacy"]
    assert legacy["rc"] == 0, legacy
    assert netdevsim["ip_legacy"][0]["rate"]["max_tx"] == 100


@pytest.fixture(scope="module")
def eswitch():
    return boot("eswitch", script="tests/lab/guest_eswitch.py")


def test_the_kernel_resets_the_eswitch_on_a_disable(eswitch):
    raw = eswitch["raw_disable"]
    assert raw["rc"] == 0, raw
    assert raw["after"] == {"count": "0", "mode": "legacy"}  # what the planner must follow


def test_every_eswitch_transition_converges_in_one_apply_then_writes_nothing(eswitch):
    for step in eswitch["steps"]:
        count, mode = step["to"]
        where = f"{step['from']} -> {step['to']}"
        assert step["apply"]["rc"] == 0, (where, step["apply"])
        assert step["kernel"] == {"count": str(count), "mode": mode}, (where, step)
        assert step["again"]["rc"] == 0 and step["again"]["writes"] == 0, (where, step["again"])
        assert step["kernel_again"] == step["kernel"], where
    issue = eswitch["steps"][1]  # 4 VFs in legacy -> 2 in switchdev
    assert issue["apply"]["actions"] == [["set_num_vfs", 0], ["set_eswitch_mode", "switchdev"], ["set_num_vfs", 2]]


SETTINGS = ("vlan_list", "spoofchk", "trust", "link_state", "rate", "address")


def _setting(vf, key):
    if key == "vlan_list":  # iproute2 lists no VLAN when there is none
        return [(v.get("vlan", 0), v.get("qos", 0)) for v in vf.get(key, []) if v.get("vlan", 0) or v.get("qos", 0)]
    return vf.get(key)


def test_an_expired_checkpoint_takes_back_every_vf_value_it_set(netdevsim):
    """What the checkpoint's timer runs (`rollback --if-uncommitted N`) puts back the VLAN it changed
    and the rate it added, read back by iproute2; status then agrees."""
    assert netdevsim["undo_checkpoint"]["rc"] == 0, netdevsim["undo_checkpoint"]
    changed = netdevsim["ip_checkpoint"]
    assert [vf["vlan_list"][0]["vlan"] for vf in changed[1:]] == [300] * 7
    assert [vf["rate"]["max_tx"] for vf in changed[1:]] == [50] * 7
    assert netdevsim["undo_expire"]["rc"] == 0, netdevsim["undo_expire"]
    assert "put back" in netdevsim["undo_expire"]["stdout"], netdevsim["undo_expire"]
    back = netdevsim["ip_expired"]
    assert [vf["vlan_list"][0]["vlan"] for vf in back[1:]] == [200] * 7
    assert [vf["rate"]["max_tx"] for vf in back[1:]] == [0] * 7  # the rate the checkpoint added is gone
    assert back[0] == netdevsim["ip_legacy"][0]  # VF 0, which it did not change, is as it was
    assert netdevsim["undo_status_expired"]["rc"] == 0, netdevsim["undo_status_expired"]


def test_an_edit_that_drops_every_setting_puts_back_what_the_kernel_first_gave(netdevsim):
    """VFs sriov-node created and then set (MAC, 802.1ad VLAN, trust, spoofchk, link state, rates)
    and the PF's MTU go back to what the kernel gave them before sriov-node ran, when the config
    stops naming them; a second apply writes nothing."""
    fresh = netdevsim["ip_fresh"]
    assert netdevsim["fresh_make"]["rc"] == 0 and len(fresh) == 8, netdevsim["fresh_make"]
    assert netdevsim["undo_drop_all"]["rc"] == 0, netdevsim["undo_drop_all"]
    dropped = netdevsim["ip_dropped"]
    for key in SETTINGS:
        assert [_setting(vf, key) for vf in dropped] == [_setting(vf, key) for vf in fresh], key
    assert netdevsim["mtu_dropped"] == "1500"
    assert netdevsim["undo_status_dropped"]["rc"] == 0, netdevsim["undo_status_dropped"]
    again = json.loads(netdevsim["undo_again"]["stdout"])
    assert again["writes"] == 0, again
