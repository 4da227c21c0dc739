"""`sriov-node set` / `unset`: edits that keep the file as written, are validated before they replace it, then apply."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sriov_node import generations
from sriov_node.authoring.toml_blocks import GROUP_KEYS, SETTABLE, Edit, EditError, GroupEdit, apply_edit, parse_assignments, remove_edit
from tests.helpers import open_host
from sriov_node.host.observe import observe
from sriov_node.sim.kernel import SimKernel
from sriov_node.engine.state import ApplyLock
from tests.helpers import CLI, PF0, PF1, run_cli, sim_writes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = Path(__file__).resolve().parent.parent / "etc/sriov-node/config.toml"
E810 = "0000:30:00.0"  # the second NIC's first PF


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), ("e810", 1, None))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir()
    path.write_bytes(EXAMPLE.read_bytes())
    return path


def drivers(host, pf):
    return [vf.driver for vf in observe(host).pf(pf).vfs]


def test_set_changes_only_what_it_is_told_keeps_the_rest_and_applies(host, config):
    before = config.read_bytes()
    os.chmod(config, 0o640)

    proc = run_cli("set", "ens1f0", "num_vfs=12", "vfs=0-3:vfio-pci", "vfs=4-11:iavf", root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    after = config.read_text()
    assert after == before.decode().replace("num_vfs = 8", "num_vfs = 12").replace('range = "4-7"', 'range = "4-11"')
    assert (config.parent / "config.toml.bak").read_bytes() == before
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert drivers(host, PF0) == ["vfio-pci"] * 4 + ["iavf"] * 8
    assert "+num_vfs = 12" in proc.stdout and "changed pf[0]" in proc.stdout
    again = run_cli("apply", "--json", root=host.root, config=str(config))
    assert json.loads(again.stdout)["pfs"][0]["status"] == "unchanged"


def test_an_edit_that_makes_the_file_invalid_is_refused_and_the_file_is_untouched(host, config):
    before = config.read_bytes()

    proc = run_cli("set", "ens1f0", "num_vfs=2", root=host.root, config=str(config))

    assert proc.returncode == 2
    assert f"error: {config}: pf[0].vfs[0].range: '0-3' reaches VF 3 but num_vfs = 2" in proc.stderr
    assert config.read_bytes() == before
    assert not (config.parent / "config.toml.bak").exists()
    assert sim_writes(host) == []


def test_the_pf_may_be_named_by_pci_address_when_the_block_selects_it_by_name(host, config):
    proc = run_cli("set", "20:00.0", "num_vfs=4", "vfs=", "--json", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert (body["block"], body["created"], body["changed"]) == ("pf[0]", False, True)
    assert body["apply"]["exit_code"] == 0 and [p["pci"] for p in body["apply"]["pfs"]] == [PF0]
    text = config.read_text()
    assert "[[pf.vfs]]" not in text and text.count("[[pf]]") == 2
    assert "# A fleet rule: every Intel E810-XXV PF (8086:159b) ...\n[[pf]]" in text
    assert drivers(host, PF0) == ["iavf"] * 4


def test_the_pf_may_be_named_by_its_permanent_mac(host, config):
    proc = run_cli("set", "3C:FD:FE:00:20:00", "num_vfs=2", "vfs=", "--no-apply", "--json", root=host.root,
                   config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert (json.loads(proc.stdout)["block"], config.read_text().count("[[pf]]")) == ("pf[0]", 2)


def test_a_pf_selected_by_a_fleet_rule_is_not_edited(host, config):
    before = config.read_bytes()
    proc = run_cli("set", "ens2f0", "num_vfs=4", root=host.root, config=str(config))
    assert proc.returncode == 2
    assert "selected by the fleet rule pf[1] (vendor:device=8086:159b index=0)" in proc.stderr
    assert config.read_bytes() == before


def test_a_new_block_is_appended_and_only_that_pf_is_applied(host, config):
    proc = run_cli("set", "ens1f1", "num_vfs=2", "vfs=1:vfio-pci", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert config.read_text().endswith('\n\n[[pf]]\nname = "ens1f1"\nnum_vfs = 2\n\n  [[pf.vfs]]\n'
                                       '  range = "1"\n  driver = "vfio-pci"\n')
    assert drivers(host, PF1) == ["iavf", "vfio-pci"]
    assert observe(host).pf(PF0).num_vfs == 0  # pf[0] wants 8, but set applies the PF it edited
    assert not any(PF0 in p for p, _, _ in sim_writes(host))


def test_a_pf_that_is_not_on_this_host_is_refused(host, config):
    before = config.read_bytes()
    proc = run_cli("set", "ens9f9", "num_vfs=2", "--json", root=host.root, config=str(config))
    assert proc.returncode == 1
    assert "no network interface named 'ens9f9'" in json.loads(proc.stdout)["error"]["message"]
    assert config.read_bytes() == before


def test_no_apply_validates_saves_and_says_it_is_not_applied(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    writes, history = len(sim_writes(host)), generations.history(host)

    proc = run_cli("set", "ens1f0", "num_vfs=10", "--no-apply", root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    assert "NOT applied" in proc.stdout
    assert "num_vfs = 10" in config.read_text()
    assert len(sim_writes(host)) == writes and generations.history(host) == history
    status = json.loads(run_cli("status", "--json", root=host.root, config=str(config)).stdout)
    assert status["config_differs"] is True

    # validated against this host's PFs too: a count the PF cannot have is refused, nothing written
    before = config.read_bytes()
    proc = run_cli("set", "ens1f0", "num_vfs=4000", "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 1
    assert "exceeds sriov_totalvfs" in proc.stderr and "nothing was written" in proc.stderr
    assert config.read_bytes() == before


@pytest.mark.parametrize("assignment, words", [
    ("mtu=9800", "9800"),  # above i40e's max_mtu
    ("vfs[0-3].driver=foobar", "foobar"),  # no such module here
    ("vfs[0-3].driver=ice", "cannot drive these VFs"),  # another NIC's driver
])
def test_no_apply_refuses_an_edit_validate_would_refuse(host, config, assignment, words):
    """--no-apply saves an edit for a later apply: one that this host's drivers refuse is refused as
    `validate` refuses it (exit 1, the reason), and the file is left as it was; one the host takes
    is saved."""
    before = config.read_bytes()
    proc = run_cli("set", "ens1f0", assignment, "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert words in proc.stderr and "nothing was written" in proc.stderr, proc.stderr
    assert config.read_bytes() == before
    proc = run_cli("set", "ens1f0", "mtu=9000", "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert "mtu = 9000" in config.read_text()
    assert run_cli("validate", root=host.root, config=str(config)).returncode == 0
    assert sim_writes(host) == []


def test_set_creates_a_missing_config(host, tmp_path):
    path = tmp_path / "new" / "config.toml"
    proc = run_cli("set", "ens1f0", "num_vfs=2", root=host.root, config=str(path))
    assert proc.returncode == 0, proc.stderr
    assert path.read_text().endswith('version = 1\n\n[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n')
    assert not (path.parent / "config.toml.bak").exists()
    assert observe(host).pf(PF0).num_vfs == 2


@pytest.mark.parametrize("args,words", [
    (["name=ens1f1"], "the PF argument is the selector"),
    (["num_vfs"], "write KEY=VALUE"),
    (["vlan=10"], "a VF group's key: write vfs[RANGE].vlan="),
    (["speed=10"], "set changes the PF's num_vfs"),
    (["vfs=", "vfs=0:iavf"], "contradict"),
    (["num_vfs=4", "num_vfs=5"], "given twice"),
    (["vfs[0-3]=x"], "name a key of the group, e.g. vfs[0-3].vlan=100"),
    (["vfs[0-3].speed=1"], "a VF group has no key 'speed'"),
    (["vfs[3-1].vlan=1"], "has a reversed span '3-1' (write 1-3)"),
    (["vfs[0-3].vlan=1", "vfs[0,1,2,3].vlan=2"], "name the same thing"),
    (["vfs[2-5].vlan=5"], "VFs 2-5 are no group of pf[0], and they share VFs with the group '0-3', the group '4-7'"),
])
def test_bad_assignments_exit_2(host, config, args, words):
    before = config.read_bytes()
    proc = run_cli("set", "ens1f0", *args, root=host.root, config=str(config))
    assert proc.returncode == 2 and words in proc.stderr
    assert config.read_bytes() == before


def test_unset_removes_the_block_with_its_comment_and_nothing_else(host, config):
    before = config.read_text()
    proc = run_cli("unset", "ens1f0", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    block = before[before.index("# A PF chosen"):before.index("# A fleet rule")]
    assert config.read_text() == before.replace(block, "")
    assert "removed pf[0]: saved (its PFs are left as they are)" in proc.stdout
    assert generation_commands(host) == ["unset"]  # the node now follows the file without the block
    again = run_cli("unset", "ens1f0", "--json", root=host.root, config=str(config))
    assert again.returncode == 0
    assert json.loads(again.stdout)["changed"] is False and "no block selects ens1f0" in again.stdout
    assert sim_writes(host) == []


# ---------------------------------------------------------------------------- the text editor itself


COMPACT = """version = 1
[[pf]]
pci = "0000:20:00.0" # port 0
num_vfs = 4
[[pf.vfs]]
range = "0-1"   # DPDK
driver = "vfio-pci"
resource = "dpdk"
[[pf.vfs]]
range = "2-3"
driver = "iavf"
[device_plugin]
resource_prefix = "example.org"
"""


def test_kept_groups_keep_their_other_keys_and_comments_new_ones_follow_the_file_style():
    edit = Edit((("num_vfs", 6),), (GroupEdit("0-1", "vfio-pci"), GroupEdit("2-5", None)))
    new = apply_edit(COMPACT, 0, ("pci", "0000:20:00.0"), edit)
    assert new == COMPACT.replace("num_vfs = 4", "num_vfs = 6").replace(
        '[[pf.vfs]]\nrange = "2-3"\ndriver = "iavf"\n', '[[pf.vfs]]\nrange = "2-5"\n')


def test_removing_the_last_block_leaves_the_tables_after_it():
    assert remove_edit(COMPACT, 0) == 'version = 1\n[device_plugin]\nresource_prefix = "example.org"\n'


def test_inline_tables_are_refused_rather_than_rewritten():
    text = 'pf = [{name = "ens1f0", num_vfs = 4}]\n'
    with pytest.raises(EditError, match="inline tables"):
        apply_edit(text, 0, ("name", "ens1f0"), Edit((("num_vfs", 8),)))


# ---------------------------------------------------------------------------- the transaction


def generation_commands(host):
    return [g.command for g in generations.history(host)]


def test_a_refused_set_leaves_the_file_byte_for_byte_and_keeps_the_edit_in_rejected(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    before, history = config.read_bytes(), generations.history(host)
    SimKernel(host.root).hold_vf(host.sysfs.vf_address(PF0, 1), 4242, "qemu-kvm")
    writes = len(sim_writes(host))

    proc = run_cli("set", "ens1f0", "num_vfs=4", "vfs=0-3:vfio-pci", root=host.root, config=str(config))

    assert proc.returncode == 3, proc.stderr
    assert config.read_bytes() == before
    rejected = config.parent / "config.toml.rejected"
    assert rejected.read_text() == before.decode().replace("num_vfs = 8", "num_vfs = 4").replace(
        '\n  [[pf.vfs]]\n  range = "4-7"\n  driver = "iavf"\n', "")
    assert f"{config}: left as it was, byte for byte: the host refused the edit; the edit is kept in {rejected}" \
        in proc.stderr
    assert "4242 (qemu-kvm)" in proc.stderr
    assert len(sim_writes(host)) == writes and observe(host).pf(PF0).num_vfs == 8
    assert generations.history(host) == history  # a refused run is no generation


def test_a_failed_set_restores_the_file_and_puts_the_pf_back(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    before, history = config.read_bytes(), generations.history(host)
    # the PF goes to 0 VFs, then refuses the new count
    SimKernel(host.root).add_fault("errno", device=PF0, attr="sriov_numvfs", errno="ENOMEM", nth=2)

    proc = run_cli("set", "ens1f0", "num_vfs=12", "vfs=0-3:vfio-pci", "vfs=4-11:iavf", "--json",
                   root=host.root, config=str(config))

    assert proc.returncode == 1, proc.stderr
    assert config.read_bytes() == before
    body = json.loads(proc.stdout)
    assert (body["saved"], body["rejected"]) == (False, f"{config}.rejected")
    assert "num_vfs = 12" in Path(body["rejected"]).read_text()
    assert body["apply"]["pfs"][0]["status"] == "failed" and body["restore"]["result"] == "converged"
    assert "left as it was, byte for byte: the edit did not converge" in proc.stderr
    assert "the PF was put back to the file's config (converged)" in proc.stderr
    assert drivers(host, PF0) == ["vfio-pci"] * 4 + ["iavf"] * 4
    assert generations.history(host) == history


def test_a_set_killed_during_its_run_leaves_the_old_file_which_boot_then_applies(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    before, history = config.read_bytes(), generations.history(host)
    SimKernel(host.root).add_fault("delay", device=PF0, attr="sriov_numvfs", nth=2, seconds=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    proc = subprocess.Popen([CLI, "--root", host.root, "--config", str(config), "set", "ens1f0", "num_vfs=12",
                             "vfs=0-3:vfio-pci", "vfs=4-11:iavf"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while not any(p.endswith(f"{PF0}/sriov_numvfs") and v == "'0\\n'" for p, v, _ in sim_writes(host)):
        assert proc.poll() is None and time.monotonic() < deadline  # the VFs go, then the new count waits
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=30)

    assert config.read_bytes() == before  # the edit was never in place: nothing says "12" but nothing applied it
    assert not (config.parent / "config.toml.rejected").exists()
    assert generations.history(host) == history
    SimKernel(host.root).clear_faults()
    boot = run_cli("boot", "--wait", "5", root=host.root, config=str(config))
    assert boot.returncode == 0, boot.stderr
    assert drivers(host, PF0) == ["vfio-pci"] * 4 + ["iavf"] * 4  # boot read the file as it was


def test_a_set_waits_for_the_apply_lock_held_elsewhere_and_keeps_its_edit(host, config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    before = config.read_bytes()
    with ApplyLock(open_host(host.root), timeout=5):
        proc = subprocess.Popen([CLI, "--root", host.root, "--config", str(config), "set", "ens1f0", "num_vfs=6",
                                 "vfs=0-3:vfio-pci", "vfs=4-5:iavf"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        line = proc.stderr.readline()  # the set says it waits, and waits
        assert f"waiting for the apply lock (pid {os.getpid()}), at most 60s" in line
        assert config.read_bytes() == before and proc.poll() is None
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "num_vfs = 6" in config.read_text() and observe(host).pf(PF0).num_vfs == 6

    # bounded by --timeout: the lock never comes, nothing is written
    before = config.read_bytes()
    with ApplyLock(open_host(host.root), timeout=5):
        late = run_cli("set", "ens1f0", "num_vfs=2", "vfs=0-1:vfio-pci", "--timeout", "0.5",
                       root=host.root, config=str(config))
    assert late.returncode == 1
    assert "for more than 0.5s; wait for it or raise --timeout" in late.stderr
    assert config.read_bytes() == before and not (config.parent / "config.toml.rejected").exists()


def _shaped(text: str, bom: bool, crlf: bool) -> bytes:
    data = text.replace("\n", "\r\n").encode() if crlf else text.encode()
    return (b"\xef\xbb\xbf" + data) if bom else data


@pytest.mark.parametrize("bom,crlf", [(True, False), (False, True), (True, True)])
def test_a_byte_order_mark_and_crlf_line_ends_are_kept(host, config, bom, crlf):
    plain = EXAMPLE.read_text()
    config.write_bytes(_shaped(plain, bom, crlf))
    before = config.read_bytes()
    args = ["num_vfs=12", "vfs=0-3:vfio-pci", "vfs=4-11:iavf", "vfs[4-11].vlan=7"]

    proc = run_cli("set", "ens1f0", *args, root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    edited = apply_edit(plain, 0, ("name", "ens1f0"), parse_assignments(args))
    assert config.read_bytes() == _shaped(edited, bom, crlf)
    assert (config.parent / "config.toml.bak").read_bytes() == before
    assert generations.current(host).config == config.read_bytes()


def test_history_shows_each_set_and_unset(host, config):
    for argv in (["set", "ens1f0", "num_vfs=6", "vfs=0-3:vfio-pci", "vfs=4-5:iavf"],
                 ["set", "ens1f0", "vfs[4-5].trust=true"],
                 ["unset", "ens1f0", "vfs[4-5].trust"],
                 ["set", "ens1f0", "vfs[4-5].trust=true", "--no-apply"]):
        proc = run_cli(*argv, root=host.root, config=str(config))
        assert proc.returncode == 0, (argv, proc.stderr)
    body = json.loads(run_cli("history", "--json", root=host.root, config=str(config)).stdout)
    assert [g["command"] for g in body["generations"]] == ["set", "set", "unset"]  # --no-apply is no generation
    last = body["generations"][-1]
    assert last["outcome"] == "converged" and last["config_path"] == os.path.realpath(config)
    assert last["sha256"] == hashlib.sha256(Path(f"{config}.bak").read_bytes()).hexdigest()
    assert "trust = true" in config.read_text()  # the --no-apply edit is in the file, not in a generation


def test_an_edit_of_a_file_with_unapplied_changes_applies_every_pf(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    config.write_text(config.read_text().replace("num_vfs = 16", "num_vfs = 4"))  # by hand, not applied

    proc = run_cli("set", "ens1f0", "vfs[4-7].trust=true", root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    assert "held changes not yet applied" in proc.stderr
    assert observe(host).pf(E810).num_vfs == 4  # the new generation claims only what was read back
    assert generation_commands(host) == ["apply", "set"]


def test_concurrent_sets_through_a_symlink_and_the_real_path_both_land(make_host, tmp_path):
    host = make_host(("x710", 2, None))
    real = tmp_path / "etc" / "sriov-node" / "config.toml"
    real.parent.mkdir(parents=True)
    real.write_text('version = 1\n\n[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n\n'
                    '[[pf]]\nname = "ens1f1"\nnum_vfs = 2\n\n  [[pf.vfs]]\n  range = "0-1"\n')
    link = tmp_path / "elsewhere" / "config.toml"  # another directory: a lock keyed by it would differ
    link.parent.mkdir()
    link.symlink_to(real)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    assert run_cli("apply", root=host.root, config=str(real)).returncode == 0

    def start(path, *args):
        return subprocess.Popen([CLI, "--root", host.root, "--config", str(path), "set", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    for n in range(30):
        procs = [start(link, "ens1f0", f"mtu={2000 + n}"), start(real, "ens1f1", f"vfs[0-1].vlan={n + 1}")]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, (n, err)
        doc = tomllib.loads(real.read_text())
        assert (doc["pf"][0].get("mtu"), doc["pf"][1]["vfs"][0].get("vlan")) == (2000 + n, n + 1), n
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert generations.current(host).config == real.read_bytes()


# ---------------------------------------------------------------------------- every key, set and unset

BASE = """version = 1

[[pf]]
name = "ens1f0"
num_vfs = 4

  [[pf.vfs]]
  range = "0-1"
  driver = "mlx5_core"

  [[pf.vfs]]
  range = "2"
  driver = "mlx5_core"

  [[pf.vfs]]
  range = "3"
"""

# key -> (what to set, what that needs first); VF group keys go to the group "0-1" (mac: the one-VF group "2";
# driver: the group "3", which has none)
GROUP_VALUES = {
    "driver": ("vfs[3].driver=vfio-pci", []),
    "resource": ("vfs[0-1].resource=mlx_fast", []),
    "mac": ("vfs[2].mac=02:00:00:00:00:02", []),
    "vlan": ("vfs[0-1].vlan=100", []),
    "qos": ("vfs[0-1].qos=3", ["vfs[0-1].vlan=100"]),
    "vlan_proto": ("vfs[0-1].vlan_proto=802.1ad", ["vfs[0-1].vlan=100"]),
    "spoofchk": ("vfs[0-1].spoofchk=false", []),
    "trust": ("vfs[0-1].trust=true", []),
    "link_state": ("vfs[0-1].link_state=disable", []),
    "min_tx_rate": ("vfs[0-1].min_tx_rate=100", []),
    "max_tx_rate": ("vfs[0-1].max_tx_rate=1000", []),
    "mtu": ("vfs[0-1].mtu=9000", []),
    "rdma": ("vfs[0-1].rdma=true", ["vfs[0-1].resource=mlx_rdma"]),
    "vhost_net": ("vfs[0-1].vhost_net=true", ["vfs[0-1].resource=mlx_vhost"]),
    "exclude_topology": ("vfs[0-1].exclude_topology=true", ["vfs[0-1].resource=mlx_any_numa"]),
    # on the InfiniBand PF (IB_KEYS): derived for a group, given for a one-VF group
    "guid": ("vfs[0-1].guid=auto", []),
    "node_guid": ("vfs[2].node_guid=02:00:00:00:00:00:00:21", []),
    "port_guid": ("vfs[2].port_guid=02:00:00:00:00:00:00:22", []),
}
IB_KEYS = {"guid", "node_guid", "port_guid"}  # run on a ConnectX-6 in InfiniBand mode (ibs1f0)
PF_VALUES = {
    "num_vfs": ("num_vfs=6", []),
    "mtu": ("mtu=9000", []),
    "eswitch_mode": ("eswitch_mode=switchdev", []),
    "drivers_autoprobe": ("drivers_autoprobe=false", ["vfs[3].driver=mlx5_core"]),
    "externally_managed": ("externally_managed=true", []),
    "representor_name": ("representor_name={pf}r{vf}", ["eswitch_mode=switchdev"]),
}


def test_the_key_tables_cover_the_schema():
    from sriov_node.config import PF_KEYS, VF_KEYS

    assert set(GROUP_VALUES) == set(GROUP_KEYS) == set(VF_KEYS) - {"range"}
    assert set(PF_VALUES) == set(SETTABLE) == set(PF_KEYS) - {"name", "altname", "pci", "mac", "vendor", "device",
                                                               "index", "vfs"}


def _where(doc, assignment):
    key = assignment.split("=")[0]
    if key.startswith("vfs["):
        rng, name = key[4:].split("].")
        (group,) = [g for g in doc["pf"][0]["vfs"] if g["range"] == rng]
        return group, name
    return doc["pf"][0], key


@pytest.mark.parametrize("kind,key", [("vf", k) for k in GROUP_VALUES] + [("pf", k) for k in PF_VALUES])
def test_every_key_can_be_set_applied_and_unset(make_host, tmp_path, kind, key):
    ib = kind == "vf" and key in IB_KEYS
    host = make_host(("cx6-ib", 1, None) if ib else ("cx5", 1, None))
    pf = "ibs1f0" if ib else "ens1f0"
    config = tmp_path / "config.toml"
    config.write_text(BASE.replace('"ens1f0"', f'"{pf}"'))
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    assignment, needs = (GROUP_VALUES if kind == "vf" else PF_VALUES)[key]
    if needs:
        assert run_cli("set", pf, *needs, root=host.root, config=str(config)).returncode == 0
    start = tomllib.loads(config.read_text())

    proc = run_cli("set", pf, assignment, "--json", root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["apply"]["exit_code"] == 0  # converged: read back from the kernel
    doc = tomllib.loads(config.read_text())
    edit = parse_assignments([assignment])
    value = edit.group_keys[0].value if kind == "vf" else edit.keys[0][1]
    expect = json.loads(json.dumps(start))
    table, name = _where(expect, assignment)
    table[name] = value
    assert doc == expect  # that key, nothing else

    if key == "num_vfs":  # required: unsetting it is refused, the file untouched
        refused = run_cli("unset", pf, "num_vfs", root=host.root, config=str(config))
        assert refused.returncode == 2 and "pf[0].num_vfs: missing" in refused.stderr
        return
    path = assignment.split("=")[0]
    proc = run_cli("unset", pf, path, root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(config.read_text()) == start
    assert generation_commands(host)[-2:] == ["set", "unset"]


# ---------------------------------------------------------------------------- vfs= never drops a key silently

WITH_KEYS = EXAMPLE.read_text().replace('  range = "4-7"\n  driver = "iavf"\n',
                                        '  range = "4-7"\n  driver = "iavf"\n  resource = "intel_sriov_netdevice"\n'
                                        '  vlan = 100                # the tenant VLAN\n')


def test_a_layout_that_would_drop_a_resource_is_refused_naming_keys_groups_and_both_ways(host, config):
    config.write_text(WITH_KEYS)
    before = config.read_bytes()

    proc = run_cli("set", "ens1f0", "num_vfs=16", "vfs=0-15:iavf", root=host.root, config=str(config))

    assert proc.returncode == 2
    assert 'pf[0].vfs[1] (range "4-7"): resource = "intel_sriov_netdevice", vlan = 100' in proc.stderr
    assert "keep them for the new groups holding those VFs, add: vfs[0-15].resource=intel_sriov_netdevice " \
           "vfs[0-15].vlan=100" in proc.stderr
    assert "to drop them, add: vfs[4-7].resource= vfs[4-7].vlan=" in proc.stderr
    assert config.read_bytes() == before and sim_writes(host) == []

    keep = run_cli("set", "ens1f0", "num_vfs=16", "vfs=0-15:iavf", "vfs[0-15].resource=intel_sriov_netdevice",
                   "vfs[0-15].vlan=100", root=host.root, config=str(config))
    assert keep.returncode == 0, keep.stderr
    (group,) = tomllib.loads(config.read_text())["pf"][0]["vfs"]
    assert group == {"range": "0-15", "driver": "iavf", "resource": "intel_sriov_netdevice", "vlan": 100}
    exported = json.loads(run_cli("export", "device-plugin", "--json-only", root=host.root, config=str(config)).stdout)
    assert [r["resourceName"] for r in exported["resourceList"]] == ["intel_sriov_netdevice"]

    drop = run_cli("set", "ens1f0", "num_vfs=8", "vfs=0-7:iavf", "vfs[0-15].resource=", "vfs[0-15].vlan=",
                   root=host.root, config=str(config))
    assert drop.returncode == 0, drop.stderr
    assert tomllib.loads(config.read_text())["pf"][0]["vfs"] == [{"range": "0-7", "driver": "iavf"}]


def test_a_group_whose_vfs_stay_one_group_keeps_every_key_and_its_comments(host, config):
    config.write_text(WITH_KEYS)

    proc = run_cli("set", "ens1f0", "num_vfs=12", "vfs=0-3:vfio-pci", "vfs=4,5,6,7:iavf", "vfs=8-11:iavf",
                   root=host.root, config=str(config))

    assert proc.returncode == 0, proc.stderr
    text = config.read_text()
    assert '  vlan = 100                # the tenant VLAN\n' in text
    groups = tomllib.loads(text)["pf"][0]["vfs"]
    assert groups == [{"range": "0-3", "driver": "vfio-pci"},
                      {"range": "4-7", "driver": "iavf", "resource": "intel_sriov_netdevice", "vlan": 100},
                      {"range": "8-11", "driver": "iavf"}]


def test_a_range_that_is_no_group_and_overlaps_none_becomes_a_new_group(host, config):
    proc = run_cli("set", "ens1f0", "num_vfs=10", "vfs[8-9].trust=true", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(config.read_text())["pf"][0]["vfs"][-1] == {"range": "8-9", "trust": True}


def test_unset_of_a_group_or_of_every_group_is_explicit_and_drops_their_keys(host, config):
    config.write_text(WITH_KEYS)
    proc = run_cli("unset", "ens1f0", "vfs[4-7]", "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(config.read_text())["pf"][0]["vfs"] == [{"range": "0-3", "driver": "vfio-pci"}]
    proc = run_cli("unset", "ens1f0", "vfs", "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert "vfs" not in tomllib.loads(config.read_text())["pf"][0]


# ---------------------------------------------------------------------------- the docs' `set` commands run as written

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _commands(text):
    """The `sriov-node set/unset ...` commands of a text, as argv lists (code spans may wrap lines)."""
    import shlex

    found = re.findall(r"`(sriov-node (?:set|unset) [^`]*)`", text) + \
        re.findall(r"^(sriov-node (?:set|unset) .*?)(?:\s+#.*)?$", text, re.M)
    return [shlex.split(" ".join(c.split()))[1:] for c in found]


def test_the_reference_set_session_runs_as_written(host, config):
    text = (DOCS / "config-reference.md").read_text()
    section = text[text.index("## From the command line"):text.index("## `[device_plugin]`")]
    (block,) = re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)
    commands = _commands(block)
    assert [c[0] for c in commands] == ["set"] * 4 + ["unset"] * 3
    for argv in commands:
        proc = run_cli(*argv, root=host.root, config=str(config))
        assert proc.returncode == 0, (argv, proc.stderr)
    assert "ens1f0" not in config.read_text()  # the last one removed the block


def test_the_guide_more_vfs_step_keeps_the_resource_and_says_why_without_it(make_host, tmp_path):
    guide = (DOCS / "guide.md").read_text()
    (toml,) = re.findall(r"^```toml\n(.*?)^```$", guide, re.M | re.S)
    config = tmp_path / "config.toml"
    config.write_text(toml.replace('textfile = "/var/lib/node_exporter/textfile/sriov_node.prom"',
                                   f'textfile = "{tmp_path}/sriov_node.prom"'))
    host = make_host(("x710", 2, None))
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    day2 = guide[guide.index("## Day two"):]
    (more,) = [c for c in _commands(day2) if "num_vfs=16" in c]
    bare = [a for a in more if not a.startswith("vfs[")]

    refused = run_cli(*bare, root=host.root, config=str(config))
    assert refused.returncode == 2
    assert 'pf[1].vfs[0] (range "0-7"): resource = "intel_sriov_netdevice"' in refused.stderr
    assert "vfs[0-7].resource=" in refused.stderr and "vfs[0-15].resource=intel_sriov_netdevice" in refused.stderr

    proc = run_cli(*more, root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert observe(host).pf(PF1).num_vfs == 16
    exported = json.loads(run_cli("export", "device-plugin", "--json-only", root=host.root, config=str(config)).stdout)
    (netdev,) = [r for r in exported["resourceList"] if r["resourceName"] == "intel_sriov_netdevice"]
    assert "ens1f1#0-15" in netdev["selectors"]["pfNames"]


def test_a_set_stopped_by_sigterm_keeps_the_file_and_the_edit_in_rejected(host, config):
    assert run_cli("apply", root=host.root, config=str(config)).returncode == 0
    before, history = config.read_bytes(), generations.history(host)
    SimKernel(host.root).add_fault("delay", device=PF0, attr="sriov_numvfs", nth=2, seconds=3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    proc = subprocess.Popen([CLI, "--root", host.root, "--config", str(config), "set", "ens1f0", "num_vfs=12",
                             "vfs=0-3:vfio-pci", "vfs=4-11:iavf"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not any(p.endswith(f"{PF0}/sriov_numvfs") and v == "'0\\n'" for p, v, _ in sim_writes(host)):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 143, err
    assert config.read_bytes() == before
    assert "num_vfs = 12" in (config.parent / "config.toml.rejected").read_text()
    assert "left as it was, byte for byte: the run was interrupted" in err
    assert generations.history(host) == history


def test_the_block_surgery_module_imports_nothing_from_the_host_or_the_engine():
    """toml_blocks edits text only: no import of sriov_node.host, engine or sim, at its top or inside a function."""
    import ast

    from sriov_node.authoring import toml_blocks

    tree = ast.parse(Path(toml_blocks.__file__).read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    names += [("." * node.level) + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert "sriov_node.config" in names  # the walk sees the module's imports
    below = [n for n in names if n.startswith(".") or n.split(".")[:2] in (["sriov_node", "host"], ["sriov_node", "engine"],
                                                                          ["sriov_node", "sim"])]
    assert below == []
