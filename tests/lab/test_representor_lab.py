"""Switchdev representor names on a real kernel: `sriov-node udev-rule` installed in
/etc/udev/rules.d of a guest booted with systemd as PID 1 (udevd running), two netdevsim devices
put in switchdev by `sriov-node apply` (selected by udev's names for them), and the names udevd
gave the representors read with `ip -j -d link` (phys_port_name pf0vfN -> name) and `udevadm info`.

One boot (LAB_INIT=systemd, tests/lab/guest_hpc.py `representors`) answers every test here.
netdevsim puts one representor per VF on the device's own bus device (the PF's parent, as on
mlx5 and ice), with phys_port_name pf0vfN (devlink_port_attrs_pci_vf_set, pf 0, controller 0); the PF's own port is p1
(udev names it eni<id>np1).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests.lab.conftest import boot


@pytest.fixture(scope="module")
def reps() -> Dict[str, Any]:
    return boot("representors", "tests/lab/guest_hpc.py", LAB_INIT="systemd")


def by_port(rows: List[Dict[str, Any]], device: str) -> Dict[str, str]:
    return {r["phys_port_name"]: r["ifname"] for r in rows if r["parent"] == device and r.get("phys_port_name")}


def test_the_printed_rule_is_installed_and_apply_puts_both_devices_in_switchdev(reps):
    assert reps["udevd"] == "active", reps
    assert reps["setup"]["rc"] == 0, reps["setup"]
    assert all(reps["pfs_before"]), reps["links_before"]
    assert reps["rule"]["rc"] == 0, reps["rule"]
    assert 'ATTR{phys_port_name}=="pf*vf0"' in reps["rule"]["stdout"]
    assert reps["apply"]["rc"] == 0, reps["apply"]
    for dev, raw in reps["eswitch"].items():
        assert list(json.loads(raw)["dev"].values())[0]["mode"] == "switchdev", (dev, raw)


def test_representors_get_the_configured_names_from_phys_port_name(reps):
    pf10, pf11 = reps["pfs_before"]
    before, after = reps["links_before"], reps["links_after"]
    assert by_port(before, "netdevsim10") == {"p1": pf10} and by_port(before, "netdevsim11") == {"p1": pf11}, before
    assert by_port(after, "netdevsim10") == {"p1": pf10, **{f"pf0vf{i}": f"{pf10}_{i}" for i in range(4)}}, after
    assert by_port(after, "netdevsim11") == {"p1": pf11, **{f"pf0vf{i}": f"dev{i}" for i in range(2)}}, after


def test_representors_are_kept_off_networkmanager_and_the_pfs_are_not(reps):
    pf10, pf11 = reps["pfs_before"]
    names = [r["ifname"] for r in reps["links_after"] if (r.get("phys_port_name") or "").startswith("pf")]
    assert len(names) == 6, reps["links_after"]
    for name in names:
        props = reps["props"][name]
        assert props.get("NM_UNMANAGED") == "1" and props.get("SRIOV_NODE_REPRESENTOR") == "1", (name, props)
    for pf in (pf10, pf11):
        assert "NM_UNMANAGED" not in reps["props"][pf] and "SRIOV_NODE_REPRESENTOR" not in reps["props"][pf]


def test_the_pfs_keep_their_names_and_netdevs_across_the_eswitch_change(reps):
    assert reps["pfs_after"] == reps["pfs_before"]
    before = {r["ifname"]: r["ifindex"] for r in reps["links_before"]}
    after = {r["ifname"]: r["ifindex"] for r in reps["links_after"]}
    assert {pf: after.get(pf) for pf in reps["pfs_before"]} == {pf: before[pf] for pf in reps["pfs_before"]}


def test_a_second_apply_in_switchdev_writes_nothing(reps):
    again = reps["apply_again"]
    assert again["rc"] == 0 and again["body"]["writes"] == 0, again


def test_the_rule_printed_again_once_the_representors_exist_is_the_same(reps):
    """The representors are netdevs of the PF's own device (its net/ folder lists them too): the PF's
    name must still be the PF's, whatever the representors are called ("dev0" sorts before "eni11np0")."""
    again = reps["rule_after"]
    assert again["rc"] == 0, again
    assert again["stdout"] == reps["rule"]["stdout"]
    pfs = {pf["pci"]: pf["name"] for pf in json.loads(reps["status"]["stdout"])["pfs"] if pf["pci"].startswith("netdevsim")}
    assert pfs == dict(zip(["netdevsim10", "netdevsim11"], reps["pfs_before"])), pfs
