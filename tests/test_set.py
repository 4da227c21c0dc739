"""`sriov-node set` / `unset`: edits that keep the file as written, are validated before they replace it, then apply."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sriov_node.edit import Edit, EditError, GroupEdit, apply_edit, remove_edit
from sriov_node.host.observe import observe
from tests.helpers import run_cli, sim_writes

EXAMPLE = Path(__file__).resolve().parent.parent / "etc/sriov-node/config.toml"
PF0, PF1, E810 = "0000:20:00.0", "0000:20:00.1", "0000:30:00.0"


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


def test_no_apply_only_edits(host, config):
    proc = run_cli("set", "ens1f0", "num_vfs=10", "--no-apply", root=host.root, config=str(config))
    assert proc.returncode == 0, proc.stderr
    assert "num_vfs = 10" in config.read_text()
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
    (["vlan=10"], "set changes num_vfs"),
    (["vfs=", "vfs=0:iavf"], "contradict"),
    (["num_vfs=4", "num_vfs=5"], "given twice"),
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
