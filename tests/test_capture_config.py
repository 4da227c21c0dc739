"""`sriov-node capture`: a host set up by hand (as `echo` scripts do) becomes a config whose apply writes nothing."""

from __future__ import annotations

import json
import re

import pytest

from sriov_node.config import load_config
from tests.helpers import open_host
from tests.helpers import run_cli, sim_writes

PF0, PF1, CX5 = "0000:20:00.0", "0000:20:00.1", "0000:30:00.0"


def vf(host, pf, i):
    return host.sysfs.vf_address(pf, i)


@pytest.fixture
def handmade(make_host):
    """VFs on mixed drivers and with settings, made with plain sysfs, devlink and netlink writes."""
    host = make_host(("x710", 2, None), ("cx5", 1, None))
    s = host.sysfs
    host.modules.load("vfio-pci")
    s.set_num_vfs(PF0, 8)  # iavf takes them all
    for i in (0, 1):  # for DPDK, pinned
        s.set_driver_override(vf(host, PF0, i), "vfio-pci")
        s.unbind(vf(host, PF0, i), "iavf")
        s.drivers_probe(vf(host, PF0, i))
    s.set_driver_override(vf(host, PF0, 2), "none")  # parked
    s.unbind(vf(host, PF0, 2), "iavf")
    s.unbind(vf(host, PF0, 3), "iavf")  # unbound by hand, nothing pins it
    s.set_driver_override(vf(host, PF0, 4), "vfio-pci")  # bound to vfio-pci, then the override cleared
    s.unbind(vf(host, PF0, 4), "iavf")
    s.drivers_probe(vf(host, PF0, 4))
    s.set_driver_override(vf(host, PF0, 4), None)
    host.links.set_vf_links("ens1f0", [(5, {"mac": "02:00:00:00:00:05", "vlan": (10, 2, "802.1Q")}),
                                       (6, {"trust": True, "spoofchk": False}),
                                       (7, {"trust": True, "spoofchk": False, "link_state": "enable"})])
    s.set_autoprobe(PF1, False)  # VFs created for a tool that binds them itself
    s.set_num_vfs(PF1, 2)
    host.devlink.set_eswitch_mode(f"pci/{CX5}", "switchdev")
    s.set_num_vfs(CX5, 3)
    host.links.set_vf_links("ens2f0", [(0, {"vlan": (100, 0, "802.1ad")}), (1, {"vlan": (100, 0, "802.1ad")})])
    return host


def test_apply_of_the_captured_config_writes_nothing(handmade, tmp_path):
    out = tmp_path / "captured.toml"
    proc = run_cli("capture", "--output", str(out), root=handmade.root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and str(out) in proc.stderr
    text = out.read_text()

    assert run_cli("validate", root=handmade.root, config=str(out)).returncode == 0
    writes = len(sim_writes(handmade))
    applied = run_cli("apply", "--json", root=handmade.root, config=str(out))
    assert applied.returncode == 0, applied.stderr
    body = json.loads(applied.stdout)
    assert body["writes"] == 0 and [p["status"] for p in body["pfs"]] == ["unchanged"] * 3
    assert len(sim_writes(handmade)) == writes

    # what it says, group by group
    assert '[[pf]]\npci = "0000:20:00.0"        # ens1f0\nnum_vfs = 8\n' in text
    assert '  range = "0-1"\n  driver = "vfio-pci"\n' in text
    assert '  range = "2"\n  driver = "none"\n' in text
    assert '# VF(s) 3: unbound, no driver_override' in text
    assert '# VF(s) 4: bound to vfio-pci by hand (no driver_override)' in text
    assert '  range = "5"\n  mac = "02:00:00:00:00:05"\n  vlan = 10\n  qos = 2\n' in text
    assert '  range = "6"\n  spoofchk = false\n  trust = true\n' in text
    assert '  range = "7"\n  spoofchk = false\n  trust = true\n  link_state = "enable"\n' in text
    assert 'num_vfs = 2\ndrivers_autoprobe = false' in text
    assert '  range = "0-1"\n  driver = "any"\n' in text  # PF1's unbound VFs
    assert 'eswitch_mode = "switchdev"' in text and 'vlan_proto = "802.1ad"' in text

    desired = load_config(str(out))
    groups = {g.range_text: g for g in desired.pfs[2].vfs}
    assert list(groups) == ["0-1"] and groups["0-1"].links.vlan == 100  # VF 2: the default, nothing to say


def test_the_captured_config_re_creates_the_layout_on_a_fresh_host(handmade, make_host, tmp_path):
    out = tmp_path / "captured.toml"
    assert run_cli("capture", "--output", str(out), root=handmade.root).returncode == 0
    fresh = make_host(("x710", 2, None), ("cx5", 1, None))
    proc = run_cli("apply", root=fresh.root, config=str(out))
    assert proc.returncode == 0, proc.stderr
    h = open_host(fresh.root)
    assert [h.sysfs.device_driver(vf(h, PF0, i)) for i in (0, 1, 2)] == ["vfio-pci", "vfio-pci", None]
    assert h.links.vf_links("ens1f0")[5].mac == "02:00:00:00:00:05"
    assert h.devlink.eswitch_mode(f"pci/{CX5}") == "switchdev"


def test_capture_by_name_and_the_previous_file_kept(handmade, tmp_path):
    out = tmp_path / "config.toml"
    out.write_text("# an older config\n")
    proc = run_cli("capture", "--by", "name", "--output", str(out), root=handmade.root)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "config.toml.bak").read_text() == "# an older config\n"
    text = out.read_text()
    assert re.search(r'\nname = "ens1f0" +# 0000:20:00\.0\n', text) and "pci = " not in text
    body = json.loads(run_cli("apply", "--json", root=handmade.root, config=str(out)).stdout)
    assert body["writes"] == 0


def test_a_host_without_vfs_captures_no_block(make_host):
    host = make_host(("x710", 2, None))
    proc = run_cli("capture", root=host.root)
    assert proc.returncode == 0
    assert "[[pf]]" not in proc.stdout
    assert "# Not captured (no VFs): 0000:20:00.0 (ens1f0), 0000:20:00.1 (ens1f1)" in proc.stdout
    assert run_cli("capture", "--by", "mac", root=host.root).returncode == 2


@pytest.mark.parametrize("second", [(PF0, 1), (PF1, 0)], ids=["same PF", "other PF"])
def test_a_mac_two_vfs_share_is_captured_once_and_the_other_said(make_host, tmp_path, second):
    """Two VFs given one MAC by hand: a config gives a MAC to one VF only, so the capture keeps the
    first VF's, leaves the other's out saying so, and stays a valid config whose apply writes nothing."""
    host = make_host(("x710", 2, None))
    for pf in (PF0, PF1):
        host.sysfs.set_num_vfs(pf, 2)
    name = {PF0: "ens1f0", PF1: "ens1f1"}
    host.links.set_vf_links("ens1f0", [(0, {"mac": "02:00:00:00:00:05"})])
    pf, index = second
    host.links.set_vf_links(name[pf], [(index, {"mac": "02:00:00:00:00:05"})])
    out = tmp_path / "captured.toml"
    proc = run_cli("capture", "--output", str(out), root=host.root)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.count('mac = "02:00:00:00:00:05"') == 1
    assert f"# VF {index}: mac 02:00:00:00:00:05 not captured: {PF0} (ens1f0) VF 0 has it too" in text, text
    applied = run_cli("apply", "--json", root=host.root, config=str(out))
    assert applied.returncode == 0 and json.loads(applied.stdout)["writes"] == 0, applied.stdout + applied.stderr
