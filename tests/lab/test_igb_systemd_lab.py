"""The systemd side on a real NIC: two Intel 82576 PFs (QEMU's igb, LAB_IGB=2) under Linux 6.1 with
systemd as PID 1 and udevd running, sriov-node installed by scripts/install (tests/lab/boot_install.sh).

One boot (tests/lab/guest_igb_boot.py) answers every test here: udev loads igb and igbvf and renames
the netdevs (enp3s0, enp3s0v0, ...); the boot oneshot makes the VFs with their settings; the names
sriov-node shows are udev's; the shipped udev rule marks the VF netdevs NM_UNMANAGED=1; the agent
puts the VFs and their settings back after `modprobe -r igb && modprobe igb`; and the device-plugin
config the agent writes, read by the plugin's discovery and selectors (tests/deviceplugin.py, the
reference matcher: the plugin's Go source is not built here) on this kernel's sysfs, gives pools
that hold exactly the configured VFs, two resources on one PF through `pfNames` `#` ranges.

QEMU >= 8.0 emulates igb; where it cannot, these tests skip, saying why (`scripts/kernel-lab --igb`).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List

import pytest

from tests.lab.conftest import boot, need_igb

PF1, PF2 = "0000:03:00.0", "0000:04:00.0"
NAME1 = "enp3s0"  # udev's name for PF1 (ID_NET_NAME_PATH: bus 3, slot 0)
PF1_VFS = ["0000:03:10.0", "0000:03:10.2", "0000:03:10.4", "0000:03:10.6"]  # VF offset 128, stride 2
PF2_VFS = ["0000:04:10.0", "0000:04:10.2"]
CONFIG = f'''[device_plugin]
resource_prefix = "example.org"
config_file = "/run/sriov-node/device-plugin/config.json"

[[pf]]
name = "{NAME1}"
num_vfs = 4
  [[pf.vfs]]
  range = "0-1"
  driver = "igbvf"
  resource = "igb_red"
  vlan = 100
  qos = 3
  spoofchk = false
  trust = true
  [[pf.vfs]]
  range = "2-3"
  driver = "igbvf"
  resource = "igb_blue"
  vlan = 200

[[pf]]
pci = "{PF2}"
num_vfs = 2
  [[pf.vfs]]
  range = "0"
  mac = "02:00:00:00:bb:00"
  trust = true
'''


@pytest.fixture(scope="module")
def lab() -> Dict[str, Any]:
    need_igb()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", dir="/tmp", delete=False) as fh:
        fh.write(CONFIG)
    try:
        return boot("igb-boot", "tests/lab/guest_igb_boot.py", LAB_INIT="systemd", LAB_IGB="2", LAB_TIMEOUT="900",
                    LAB_PRE="tests/lab/boot_install.sh", LAB_ENV="SRIOV_LAB_CONFIG", SRIOV_LAB_CONFIG=fh.name)
    finally:
        os.unlink(fh.name)


def status(snap: Dict[str, Any]) -> Dict[str, Any]:
    assert snap["status"]["stdout"], snap["status"]
    return {pf["pci"]: pf for pf in json.loads(snap["status"]["stdout"])["pfs"]}


def vfs(view: Dict[str, Any], key: str) -> List[Any]:
    return [vf[key] for vf in view["vfs"]]


def check_layout(snap: Dict[str, Any]) -> None:
    """The VFs, their drivers and every setting, as the kernel reads them back."""
    pf1, pf2 = snap["pf1"], snap["pf2"]
    assert pf1["name"] == NAME1 and pf1["numvfs"] == "4" and vfs(pf1, "pci") == PF1_VFS, pf1
    assert pf2["name"] == "enp4s0" and pf2["numvfs"] == "2" and vfs(pf2, "pci") == PF2_VFS, pf2
    assert vfs(pf1, "driver") == ["igbvf"] * 4 and vfs(pf2, "driver") == ["igbvf"] * 2
    ip1, ip2 = snap["ip1"], snap["ip2"]
    assert [vf.get("vlan_list") for vf in ip1] == [[{"vlan": 100, "qos": 3}]] * 2 + [[{"vlan": 200}]] * 2, ip1
    assert [(vf["spoofchk"], vf["trust"]) for vf in ip1] == [(False, True)] * 2 + [(True, False)] * 2, ip1
    assert ip2[0]["address"] == "02:00:00:00:bb:00" and ip2[0]["trust"] is True, ip2
    assert snap["status_rc"] == 0, snap["status"]


def test_udev_loaded_igb_and_igbvf_and_the_units_converged_at_boot(lab):
    assert lab["modules"] == {"igb": True, "igbvf": True}, lab
    assert lab["oneshot"]["Result"] == "success" and lab["oneshot"]["ActiveState"] == "active", lab["journal"]
    assert lab["agent"]["ActiveState"] == "active", lab.get("agent_journal")
    assert "2 of 2 PF(s) converged" in lab["agent"]["StatusText"], lab["agent"]
    assert lab["system"] in ("running", "degraded") and "sriov-node" not in lab["failed"], lab["failed"]
    # network-pre.target was reached with both PFs' VFs made (the oneshot ran before it)
    rows = [line.split() for line in lab["at_network_pre"].splitlines()]
    assert sorted(r[2] for r in rows if r[0] in (PF1, PF2)) == sorted(PF1_VFS + PF2_VFS), lab["at_network_pre"]


def test_the_vfs_their_drivers_and_settings_after_boot(lab):
    check_layout(lab["booted"])


def test_the_names_status_shows_are_udevs(lab):
    snap = lab["booted"]
    names1, names2 = vfs(snap["pf1"], "netdev"), vfs(snap["pf2"], "netdev")
    assert names1 == [f"{NAME1}v{i}" for i in range(4)] and names2 == [f"enp4s0v{i}" for i in range(2)], (names1, names2)
    shown = status(snap)
    assert shown[PF1]["name"] == NAME1 and shown[PF2]["name"] == "enp4s0"
    assert [vf["netdev"] for vf in shown[PF1]["vfs"]] == names1
    assert [vf["netdev"] for vf in shown[PF2]["vfs"]] == names2
    assert shown[PF1]["converged"] is True and shown[PF2]["converged"] is True


def test_the_shipped_rule_marks_every_vf_netdev_nm_unmanaged(lab):
    assert lab["rule"]
    for snap in (lab["booted"], lab["reloaded"]):
        udev = snap["udev"]
        for name in vfs(snap["pf1"], "netdev") + vfs(snap["pf2"], "netdev"):
            assert udev[name]["NM_UNMANAGED"] == "1" and udev[name]["SRIOV_NODE_VF"] == "1", (name, udev[name])
        for pf in ("enp3s0", "enp4s0"):  # a PF is not a VF: NetworkManager keeps it
            assert udev[pf]["NM_UNMANAGED"] is None and udev[pf]["INTERFACE"] == pf, udev[pf]


def test_the_agent_puts_vfs_and_settings_back_after_an_igb_reload(lab):
    assert lab["rmmod"]["rc"] == 0, lab["rmmod"]
    assert lab["after_rmmod"] == {"pf_drivers": [None, None], "vfs": [0, 0]}  # igb's remove took the VFs
    assert lab["modprobe"]["rc"] == 0, lab["modprobe"]
    assert lab["restored"], (lab["reloaded"]["pf1"], lab.get("agent_journal"))
    check_layout(lab["reloaded"])
    before, after = lab["agent_runs"]
    assert after > before, lab.get("agent_journal")
    assert lab["agent_after"]["ActiveState"] == "active" and lab["agent_after"]["NRestarts"] == "0"
    assert "2 of 2 PF(s) converged" in lab["agent_after"]["StatusText"], lab["agent_after"]
    print(f"modprobe igb to VFs back / converged (guest, TCG): {lab['restored_seconds']} s / {lab['converged_seconds']} s")


def test_the_plugins_pools_hold_exactly_the_configured_vfs(lab):
    for snap in (lab["booted"], lab["reloaded"]):
        plugin = snap["plugin"]
        assert "error" not in plugin, plugin
        (red,) = [r for r in plugin["config"]["resourceList"] if r["resourceName"] == "igb_red"]
        (blue,) = [r for r in plugin["config"]["resourceList"] if r["resourceName"] == "igb_blue"]
        assert red["selectors"]["pfNames"] == [f"{NAME1}#0-1"] and blue["selectors"]["pfNames"] == [f"{NAME1}#2-3"]
        assert plugin["pools"] == {"example.org/igb_red": PF1_VFS[:2], "example.org/igb_blue": PF1_VFS[2:]}


def test_no_run_during_the_reload_calls_the_pf_not_an_sriov_pf(lab):
    assert "is not an SR-IOV PF" not in lab["agent_journal"], lab["agent_journal"][-3000:]


def test_no_run_during_the_reload_addresses_a_netdev_by_a_stale_name(lab):
    """udev renames each PF netdev (eth0 -> enp3s0) and VF netdev just after igb or igbvf probes it,
    while the agent's runs set VF settings: every netlink request names its netdev by ifindex, read
    at the request, so none meets a name that is gone (ENODEV, seen here before) or another's."""
    journal = lab["agent_journal"]
    assert "No such device" not in journal and "ENODEV" not in journal, journal[-3000:]
