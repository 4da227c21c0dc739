"""A real SR-IOV NIC: QEMU's igb (Intel 82576, 8086:10c9) under Linux 6.1, two PFs (LAB_IGB=2).

One guest boot (tests/lab/guest_igb.py) answers every test here; each asserts what the kernel
reads back (sysfs, `ip -d -j link`, strace of the agent's writes), not only what sriov-node says.
It is also the check of sriov_node/drivers.py's igb row against the real driver.

QEMU >= 8.0 emulates igb: scripts/kernel-lab's set-up installs it from bookworm-backports on
Debian 12; where it cannot, these tests skip, saying why (`scripts/kernel-lab --igb`).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from tests.lab.conftest import boot, need_igb

SCRIPT = "tests/lab/guest_igb.py"
PF1, PF2 = "0000:03:00.0", "0000:04:00.0"


@pytest.fixture(scope="module")
def igb() -> Dict[str, Any]:
    need_igb()
    return boot("igb", script=SCRIPT, LAB_IGB="2", LAB_TIMEOUT="900")


def body(run: Dict[str, Any]) -> Dict[str, Any]:
    assert run["stdout"], run
    return json.loads(run["stdout"])


def drivers(view: Dict[str, Any]) -> List[Any]:
    return [vf["driver"] for vf in view["vfs"]]


def no_writes(run: Dict[str, Any]) -> None:
    assert run["sysfs_writes"] == [] and run["netlink_sets"] == [], run


def test_the_guest_has_two_82576_pfs_with_7_vfs_each(igb):
    assert igb["pf_drivers"] == [True, True], igb["setup"]
    assert igb["pf"]["device"] == "0x10c9" and igb["pf"]["totalvfs"] == "7"
    assert igb["pf"]["perm"] == "Permanent address: 52:54:00:5f:00:01"


def test_counts_0_4_2_0_by_name_pci_and_permanent_mac(igb):
    assert igb["by_name"]["numvfs_writes"][PF1] and "\"4\\n\"" in igb["by_name"]["numvfs_writes"][PF1][0]
    assert igb["by_name"]["kernel"]["numvfs"] == "4" and len(igb["by_name"]["kernel"]["vfs"]) == 4
    assert [vf["device"] for vf in igb["by_name"]["kernel"]["vfs"]] == ["0x10ca"] * 4
    # the kernel's own rule the planner follows: 4 -> 2 is EBUSY
    assert "Errno 16" in igb["raw_resize"]["stderr"]
    by_pci = igb["by_pci"]
    assert by_pci["rc"] == 0, by_pci
    assert [w.split(", ")[1] for w in by_pci["numvfs_writes"][PF1]] == ['"0\\n"', '"2\\n"']  # through 0
    assert by_pci["kernel"]["numvfs"] == "2" and drivers(by_pci["kernel"]) == ["igbvf"] * 2
    by_mac = igb["by_mac"]
    assert by_mac["rc"] == 0, by_mac
    assert body(by_mac)["pfs"][0]["pci"] == PF1 and by_mac["kernel"]["numvfs"] == "0"


def test_vfs_on_the_default_driver_igbvf_loaded_from_modules_alias(igb):
    assert igb["igbvf_loaded_before"] is False  # no udev in the lab: nothing loads it but the agent
    again = igb["by_name_again"]
    assert again["rc"] == 0, again
    assert igb["igbvf_loaded_again"] is True
    assert drivers(again["kernel"]) == ["igbvf"] * 4
    assert all(vf["netdev"] for vf in again["kernel"]["vfs"])


def test_the_first_apply_already_binds_igbvf(igb):
    assert igb["by_name"]["rc"] == 0 and drivers(igb["by_name"]["kernel"]) == ["igbvf"] * 4, igb["by_name"]["stdout"][-2000:]


def test_vfio_pci_beside_igbvf_and_a_held_group_is_not_pulled(igb):
    run = igb["drivers"]
    assert run["rc"] == 0, run
    view = run["kernel"]
    assert drivers(view) == ["igbvf", "igbvf", "vfio-pci", "vfio-pci"]
    assert [vf["dev_vfio"] for vf in view["vfs"]] == [False, False, True, True]
    assert len({vf["group"] for vf in view["vfs"]}) == 4  # each VF its own IOMMU group
    assert igb["holder"]["ready"] == "held"
    held = igb["held"]
    assert held["rc"] == 3 and body(held)["pfs"][0]["status"] == "refused", held
    assert f"/dev/vfio/{igb['holder']['group']} is open by pid" in body(held)["pfs"][0]["error"]
    no_writes(held)
    assert held["kernel"]["numvfs"] == "4" and drivers(held["kernel"]) == drivers(view)


def test_every_setting_igb_takes_is_applied_and_read_back(igb):
    assert igb["pf_up"]["carrier"] is True
    run = igb["settings"]
    assert run["rc"] == 0, run
    assert len(run["netlink_sets"]) >= 1 and run["sysfs_writes"] == []
    vf0, vf1 = igb["settings"]["ip"][:2]
    assert vf0["address"] == "02:00:00:00:aa:00" and vf0["vlan_list"] == [{"vlan": 100, "qos": 3}]
    assert vf0["spoofchk"] is False and vf0["trust"] is True and vf0["rate"] == {"max_tx": 100, "min_tx": 0}
    assert vf1["vlan_list"] == [{"vlan": 200}] and vf1["spoofchk"] is True and vf1["trust"] is False
    assert vf1["rate"]["max_tx"] == 500
    shown = igb["ip_show"]["stdout"]
    assert "vf 0     link/ether 02:00:00:00:aa:00" in shown and "vlan 100, qos 3" in shown
    assert "max_tx_rate 100Mbps, spoof checking off, link-state auto, trust on" in shown
    assert igb["status"]["rc"] == 0, igb["status"]  # status --exit-code: converged
    # igb keeps a new VF MAC for the VF driver's next probe: the igbvf netdev still has its own
    assert igb["settings"]["kernel"]["vfs"][0]["address"] != "02:00:00:00:aa:00"


def test_a_converged_config_and_its_capture_make_zero_writes(igb):
    for name in ("again", "captured_apply"):
        run = igb[name]
        assert run["rc"] == 0, run
        assert body(run)["pfs"][0]["status"] == "unchanged" and body(run)["pfs"][0]["writes"] == 0
        no_writes(run)
    text = igb["capture"]["text"]
    assert f'pci = "{PF1}"' in text and 'driver = "vfio-pci"' in text and "max_tx_rate = 100" in text


@pytest.mark.parametrize("key,errno,why", [
    ("min_tx_rate", "EINVAL", "igb has no minimum tx rate"),
    ("vlan_proto", "EPROTONOSUPPORT", "igb supports only 802.1Q VF VLANs"),
    ("link_state", "EOPNOTSUPP", "igb has no ndo_set_vf_link_state"),
])
def test_what_igb_refuses_is_named_before_any_write(igb, key, errno, why):
    # the kernel's own answer (iproute2): the driver table's igb row must agree
    raw = igb["raw"][key]
    assert raw["rc"] != 0 and {"EINVAL": "Invalid argument", "EPROTONOSUPPORT": "Protocol not supported",
                               "EOPNOTSUPP": "Operation not supported"}[errno] in raw["stderr"], raw
    runs = igb["refusals"][key]
    validate = body(runs["validate"])
    assert runs["validate"]["rc"] == 1 and validate["valid"] is False
    (refused,) = validate["refused"]
    assert [(r["key"], r["vf"], r["errno"]) for r in refused["refusals"]] == [(key, 1, errno)]
    assert why in refused["error"] and "nothing was written" in refused["error"]
    for what in ("dry_run", "apply"):
        run = runs[what]
        assert run["rc"] == 1, (what, run)
        (pf,) = body(run)["pfs"]
        assert pf["status"] == "refused" and pf["writes"] == 0 and why in pf["error"], (what, pf)
        no_writes(run)
    assert runs["ip_after"] == igb["refusals_ip_before"]  # the kernel's VFs untouched


def test_max_tx_rate_with_the_pf_down_is_refused_by_the_kernel_and_changes_nothing(igb):
    assert "Invalid argument" in igb["raw_rate_down"]["stderr"]  # EINVAL: the link is down
    run = igb["rate_down"]["apply"]
    assert run["rc"] == 1, run
    (pf,) = body(run)["pfs"]
    assert [(e["vf"], e["errno"]) for e in pf["errors"]] == [(0, "EINVAL")]
    assert igb["rate_down"]["ip_after"][0]["rate"]["max_tx"] == 100  # unchanged


def test_max_tx_rate_with_the_pf_down_is_refused_before_any_write(igb):
    runs = igb["rate_down"]
    assert runs["validate"]["rc"] == 1 and runs["dry_run"]["rc"] == 1, runs
    no_writes(runs["apply"])


def test_two_pfs_converge_together_then_nothing_to_do(igb):
    run = igb["two"]
    assert run["rc"] == 0, run
    pf1, pf2 = run["kernel"]["pf1"], run["kernel"]["pf2"]
    assert pf1["numvfs"] == "3" and drivers(pf1) == ["igbvf"] * 3
    assert pf2["numvfs"] == "7" and drivers(pf2) == ["vfio-pci"] * 2 + ["igbvf"] * 5
    assert [vf["pci"] for vf in pf2["vfs"]][:2] == ["0000:04:10.0", "0000:04:10.2"]  # offset 128, stride 2
    vf6 = run["ip2"][6]
    assert vf6["trust"] is True and vf6["vlan_list"] == [{"vlan": 7}]
    assert igb["two_status"]["rc"] == 0
    again = igb["two_again"]
    assert again["rc"] == 0 and [p["writes"] for p in body(again)["pfs"]] == [0, 0]
    no_writes(again)
    off = igb["two_off"]
    assert off["rc"] == 0 and off["kernel"] == {"pf1": "0", "pf2": "0"}, off
