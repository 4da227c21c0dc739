"""`altname`: a [[pf]] block selects its PF by an alternative interface name (IFLA_ALT_IFNAME), as udev gives
them (the path name beside the slot name) or `ip link property add` does; through the CLI on simulated hosts."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from sriov_node.host.observe import observe
from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, PF1, run_cli, sim_writes


def _block(selector: str, num_vfs: int = 2) -> str:
    return f"""
[[pf]]
{selector}
num_vfs = {num_vfs}
"""


def test_a_pf_is_selected_by_its_path_altname_and_reapplying_writes_nothing(make_host, write_config):
    host = make_host()
    path = write_config(_block('altname = "enp32s0f1"'))  # udev's path name of ens1f1 (bus 0x20, function 1)

    proc = run_cli("apply", root=host.root, config=path)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = observe(host)
    assert seen.pf(PF1).num_vfs == 2 and seen.pf(PF0).num_vfs == 0
    writes = len(sim_writes(host))
    proc = run_cli("apply", root=host.root, config=path)
    assert proc.returncode == 0 and len(sim_writes(host)) == writes
    status = json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)
    pf = next(p for p in status["pfs"] if p["pci"] == PF1)
    assert pf["block"] == "pf[0]" and pf["converged"] is True
    assert "enp32s0f1" in pf["altnames"]  # status shows the name the block selects it by


def test_an_added_altname_selects_and_follows_the_pf(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_altname("ens1f0", "uplink-a")  # ip link property add dev ens1f0 altname uplink-a
    path = write_config(_block('name = "ens1f0"\naltname = "uplink-a"', 3))

    proc = run_cli("apply", root=host.root, config=path)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert observe(host).pf(PF0).num_vfs == 3


def test_an_altname_no_pf_has_fails_its_block_naming_what_there_is(make_host, write_config):
    host = make_host()
    path = write_config(_block('altname = "uplink-b"') + _block('name = "ens1f0"'))

    proc = run_cli("apply", root=host.root, config=path)

    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert ("pf[0].altname: no SR-IOV PF has the alternative name 'uplink-b'; alternative names here: "
            f"{PF0} (ens1f0): enp32s0f0; {PF1} (ens1f1): enp32s0f1") in out
    assert observe(host).pf(PF0).num_vfs == 2  # the other block still converges


def test_a_name_and_an_altname_of_two_pfs_are_refused(make_host, write_config):
    host = make_host()
    path = write_config(_block('name = "ens1f0"\naltname = "enp32s0f1"'))

    proc = run_cli("apply", root=host.root, config=path)

    assert proc.returncode != 0
    assert (f"pf[0].altname: name 'ens1f0' is {PF0} (ens1f0), which has alternative names enp32s0f0, but altname "
            f"is 'enp32s0f1' (it is an alternative name of {PF1} (ens1f1)); name and altname must name the same PF"
            in proc.stdout + proc.stderr)
    assert sim_writes(host) == []


@pytest.mark.parametrize("selector,key,words", [
    ('name = "ens1f0"\naltname = "ens1f0"', "pf[0].altname", "'ens1f0' is the name itself"),
    ('altname = "' + "a" * 128 + '"', "pf[0].altname", f"'{'a' * 128}' is 128 characters long; alternative "
                                                       "interface names have at most 127"),
    ('altname = "x"\npci = "0000:20:00.0"', "pf[0]", "needs exactly one selector: name, pci, mac, or vendor+device; "
                                                     "or altname, alone or with name (got altname, pci)"),
    ('altname = "a"', None, None),  # two blocks, one altname
])
def test_bad_altnames_are_refused_naming_the_key(make_host, write_config, selector, key, words):
    host = make_host()
    text = _block(selector)
    if key is None:
        text += text
        key, words = "pf[1]", "selects the same PF as pf[0] (altname=a); merge the two blocks"
    path = write_config(text)

    proc = run_cli("validate", root=host.root, config=path)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{path}: {key}: {words}" in proc.stderr, proc.stderr
    assert sim_writes(host) == []


def test_a_captured_tree_cannot_tell_altnames(make_host, write_config, tmp_path):
    host = make_host()
    captured = str(tmp_path / "captured")
    shutil.copytree(host.root, captured, symlinks=True)
    os.unlink(os.path.join(captured, ".sriov-node-sim.json"))  # no model behind it: a captured tree, no netlink
    path = write_config(_block('altname = "enp32s0f0"'))

    proc = run_cli("validate", root=captured, config=path)

    assert proc.returncode != 0
    assert "cannot be read here (no netlink: a captured tree); select the PF by name, pci or mac" in (
        proc.stdout + proc.stderr)


def test_the_live_reader_takes_them_from_ifla_prop_list():
    """What NetlinkLinks.altnames parses: an RTM_NEWLINK as pyroute2 decodes it (no kernel asked)."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    from sriov_node.host.links import altnames_of

    msg = ifinfmsg()
    msg["index"] = 3
    msg["attrs"] = [("IFLA_IFNAME", "ens1f0"), ("IFLA_PROP_LIST", {"attrs": [
        ("IFLA_ALT_IFNAME", "enp32s0f0np0"), ("IFLA_ALT_IFNAME", "uplink-a")]})]
    msg.encode()
    got = ifinfmsg(msg.data)
    got.decode()
    assert altnames_of(got) == ("enp32s0f0np0", "uplink-a")
    bare = ifinfmsg()
    bare["attrs"] = [("IFLA_IFNAME", "eno1")]
    bare.encode()
    got = ifinfmsg(bare.data)
    got.decode()
    assert altnames_of(got) == ()


def test_capture_selects_a_pf_by_altname_and_writes_blocks_by_altname(make_host, write_config, tmp_path):
    """`--by altname` writes each block with the PF's alternative name (applying the capture writes
    nothing); `capture PF...` takes a PF by PCI address, name or alternative name, as a block's pci,
    name and altname select it."""
    host = make_host()
    SimKernel(host.root).add_altname("ens1f1", "uplink-b")
    assert run_cli("apply", root=host.root, config=write_config(_block('name = "ens1f0"', 2) + _block('name = "ens1f1"', 3))
                   ).returncode == 0
    out = tmp_path / "captured.toml"
    proc = run_cli("capture", "--by", "altname", "--output", str(out), root=host.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = out.read_text()
    assert 'altname = "enp32s0f0"' in text and 'altname = "enp32s0f1"' in text and "pci =" not in text
    writes = len(sim_writes(host))
    again = run_cli("apply", root=host.root, config=str(out))  # the same resolution as the config's
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(sim_writes(host)) == writes
    # one PF asked for by an altname made by hand: its block only
    proc = run_cli("capture", "uplink-b", "--by", "altname", root=host.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("[[pf]]") == 1 and 'altname = "enp32s0f1"' in proc.stdout and "num_vfs = 3" in proc.stdout
    # the file says which PFs it leaves out, and what applying it alone would mean for them
    assert f"not in this file: {PF0}" in proc.stdout and "unmanaged" in proc.stdout
    # the same PF by its path altname, its name and its address: one block each time
    for how in ("enp32s0f1", "ens1f1", PF1):
        proc = run_cli("capture", how, root=host.root)
        assert proc.returncode == 0 and proc.stdout.count("[[pf]]") == 1 and f'pci = "{PF1}"' in proc.stdout, how


def test_capture_of_an_unknown_pf_name_is_refused_naming_it_and_writes_nothing(make_host, tmp_path):
    host = make_host()
    out = tmp_path / "captured.toml"
    proc = run_cli("capture", "uplink-z", "--output", str(out), root=host.root)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "'uplink-z'" in proc.stderr and "alternative name" in proc.stderr and "enp32s0f0" in proc.stderr
    assert not out.exists() and not proc.stdout
