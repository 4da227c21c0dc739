"""The console script as a user runs it: exit codes, text and JSON shapes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli, sim_writes
from sriov_node.engine.reconcile import load_desired
from sriov_node.errors import ConfigError
from tests.helpers import open_host
from sriov_node.sim.kernel import SimKernel

EXAMPLE = str(Path(__file__).resolve().parent.parent / "etc/sriov-node/config.toml")


@pytest.fixture
def demo_host(make_host):
    return make_host(("x710", 2, None), ("e810", 2, None))


def test_help_is_plain_and_fast_to_reach():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("validate", "apply", "status", "sim"):
        assert command in result.stdout


def test_validate_the_shipped_example(demo_host):
    result = run_cli("validate", root=demo_host.root, config=EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and "2 PF(s)" in result.stdout


def test_dry_run_json_lists_actions_and_writes_nothing(demo_host):
    result = run_cli("apply", "--dry-run", "--json", root=demo_host.root, config=EXAMPLE)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == {"actions", "on_failure", "pfs", "result", "exit_code"}
    assert (body["result"], body["exit_code"]) == ("planned", 0)
    actions = body["actions"]
    assert all({"pf", "op", "phase"} <= set(a) for a in actions)
    again = "once more if the PF reads 0 VFs after 1 s (NVMe right after probe)"  # its retry rule
    assert {"pf": "0000:20:00.0", "op": "set_num_vfs", "value": 8, "current": 0, "phase": "count", "retry": again} in actions
    assert {"pf": "0000:30:00.0", "op": "set_num_vfs", "value": 16, "current": 0, "phase": "count", "retry": again} in actions
    assert {"pf": "0000:20:00.0", "op": "set_autoprobe", "value": True} in body["on_failure"]
    assert [p["status"] for p in body["pfs"]] == ["planned", "planned"]
    binds = [a for a in actions if a["op"] == "bind_driver"]
    assert [(a["vf"], a["driver"]) for a in binds] == [(i, "vfio-pci") for i in range(4)] + [(i, "iavf") for i in range(4, 8)]
    assert sim_writes(demo_host) == []


def test_apply_then_converged_dry_run_is_empty(demo_host):
    applied = run_cli("apply", "--json", root=demo_host.root, config=EXAMPLE)
    assert applied.returncode == 0, applied.stderr
    body = json.loads(applied.stdout)
    assert body["exit_code"] == 0 and body["writes"] > 0
    assert {p["pci"]: p["status"] for p in body["pfs"]} == {"0000:20:00.0": "changed", "0000:30:00.0": "changed"}
    again = run_cli("apply", "--dry-run", "--json", root=demo_host.root, config=EXAMPLE)
    assert {k: v for k, v in json.loads(again.stdout).items() if k != "pfs"} == {
        "actions": [], "on_failure": [], "result": "converged", "exit_code": 0}
    text = run_cli("apply", root=demo_host.root, config=EXAMPLE)
    assert text.returncode == 0 and "unchanged" in text.stdout


def test_status_without_config_shows_observed_state_only(demo_host):
    result = run_cli("status", "--json", root=demo_host.root)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [p["pci"] for p in body["pfs"]] == ["0000:20:00.0", "0000:20:00.1", "0000:30:00.0", "0000:30:00.1"]
    first = body["pfs"][0]
    assert {"pci", "name", "driver", "total_vfs", "num_vfs", "converged", "vfs"} <= set(first)
    assert first["converged"] is None and first["name"] == "ens1f0" and first["total_vfs"] == 64


def test_status_compares_with_the_config(demo_host):
    before = json.loads(run_cli("status", "--json", root=demo_host.root, config=EXAMPLE).stdout)
    assert [p["converged"] for p in before["pfs"]] == [False, None, False, None]
    run_cli("apply", root=demo_host.root, config=EXAMPLE)
    after = json.loads(run_cli("status", "--json", root=demo_host.root, config=EXAMPLE).stdout)
    assert [p["converged"] for p in after["pfs"]] == [True, None, True, None]
    vf = after["pfs"][0]["vfs"][5]
    assert {"index", "pci", "driver", "netdev"} <= set(vf)
    assert vf["driver"] == "iavf" and vf["netdev"] == "ens1f0v5" and vf["matches"] is True
    text = run_cli("status", root=demo_host.root, config=EXAMPLE)
    assert "converged" in text.stdout and "vfio-pci" in text.stdout


def test_default_config_lives_under_the_root(demo_host):
    target = Path(demo_host.root) / "etc/sriov-node/config.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE, target)
    result = run_cli("apply", root=demo_host.root)
    assert result.returncode == 0, result.stderr
    assert demo_host.sysfs.num_vfs("0000:20:00.0") == 8


def test_exit_codes(make_host, write_config):
    no_mmio = make_host(mmio=False)
    cfg = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n')
    failed = run_cli("apply", root=no_mmio.root, config=cfg)
    assert failed.returncode == 1
    assert "error: PF 0000:20:00.0" in failed.stderr and "pci=realloc" in failed.stderr
    assert "Traceback" not in failed.stderr

    host = make_host()
    run_cli("apply", root=host.root, config=write_config(
        '[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n'))
    SimKernel(host.root).hold_vf(host.sysfs.vf_address("0000:20:00.0", 0), 777, "dpdk-testpmd")
    refused = run_cli("apply", root=host.root, config=write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n'))
    assert refused.returncode == 3
    assert "777" in refused.stderr and "dpdk-testpmd" in refused.stderr and "--force" in refused.stderr

    invalid = run_cli("apply", root=host.root, config=write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = -1\n'))
    assert invalid.returncode == 2 and "pf[0].num_vfs" in invalid.stderr


def test_invalid_config_json_error_shape(make_host, write_config):
    host = make_host()
    result = run_cli("apply", "--json", root=host.root, config=write_config('[[pf]]\nnaem = "ens1f0"\n'))
    assert result.returncode == 2
    body = json.loads(result.stdout)["error"]
    assert body["type"] == "ConfigError"
    assert {p["key"] for p in body["problems"]} >= {"pf[0].naem", "pf[0].num_vfs"}


def test_sim_create_rejects_unknown_models(tmp_path):
    result = run_cli("sim", "create", str(tmp_path / "h"), "--nic", "x999")
    assert result.returncode == 2 and "unknown NIC" in result.stderr


def test_sim_create_refuses_a_directory_that_is_not_a_simulated_host(tmp_path):
    (tmp_path / "important").write_text("keep me")
    result = run_cli("sim", "create", str(tmp_path))
    assert result.returncode == 2 and (tmp_path / "important").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="the trust rule applies to root only")
def test_real_root_refuses_a_config_anyone_can_edit(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n')
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError) as info:
        load_desired(open_host("/"), str(path))
    assert "chmod go-w" in str(info.value)


def test_status_shows_the_host_even_when_the_config_does_not_fit(demo_host, write_config):
    demo_host.sysfs.unbind("0000:20:00.0", "i40e")  # no driver: no netdev, so the name matches nothing
    cfg = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n')
    result = run_cli("status", "--json", root=demo_host.root, config=cfg)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert [p["driver"] for p in body["pfs"]][:2] == [None, "i40e"]
    assert [(b["block"], b["key"], b["kind"]) for b in body["blocks"]] == [("pf[0]", "name", "absent")]
    assert body["converged"] is False
    text = run_cli("status", root=demo_host.root, config=cfg)
    assert "pf[0]: NOT APPLIED: no network interface named 'ens1f0'" in text.stdout


def test_status_with_an_invalid_config_shows_the_host_and_exits_2(demo_host, write_config):
    cfg = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = "two"\n')
    result = run_cli("status", "--json", root=demo_host.root, config=cfg)
    assert result.returncode == 2 and "pf[0].num_vfs" in result.stderr
    body = json.loads(result.stdout)
    assert len(body["pfs"]) == 4 and body["error"]["type"] == "ConfigError"


def test_a_missing_root_is_named(tmp_path):
    result = run_cli("status", root=str(tmp_path / "nowhere"))
    assert result.returncode == 2 and "no such directory" in result.stderr


def test_an_unwritable_state_dir_refuses_the_run_before_any_write(make_host, write_config):
    """A generation that cannot be recorded is a failed run: found before the first write, nothing written."""
    from tests.helpers import sim_writes

    host = make_host()
    Path(host.root, "var").mkdir()
    Path(host.root, "var/lib").write_text("not a directory")
    result = run_cli("apply", "--json", root=host.root, config=write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n'))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    body = json.loads(result.stdout) if result.stdout.strip() else {"error": {"message": result.stderr}}
    assert "not a directory" in json.dumps(body), body
    assert sim_writes(host) == []


def complete(words: str, root: str = None) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    env.update(_SRIOV_NODE_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - 1))
    out = subprocess.run([shutil.which("sriov-node", path=os.path.dirname(sys.executable))], capture_output=True,
                         text=True, env=env, timeout=60).stdout
    return out.split()


def test_shell_completion_knows_commands_and_this_hosts_pfs(make_host):
    host = make_host(("x710", 2, None))
    assert "apply" in complete("sriov-node ap")
    assert complete(f"sriov-node --root {host.root} set ens1") == ["ens1f0", "ens1f1"]
    assert complete(f"sriov-node --root {host.root} check --pf 0000:20") == ["0000:20:00.0", "0000:20:00.1"]


def test_a_named_command_loads_only_its_own_module():
    from sriov_node.cli import command_of

    assert command_of(["--root", "/x", "--config=/c.toml", "apply", "--json"]) == "apply"
    assert command_of(["--root=/x", "sim", "create", "d"]) == "sim"
    assert command_of(["--help"]) is None and command_of([]) is None
    probe = ("import sys\nfrom sriov_node.cli import register\nregister(sys.argv[1:])\n"
             "print(sorted(m for m in sys.modules if m.startswith('sriov_node.cli.')))")
    loaded = subprocess.run([sys.executable, "-c", probe, "--root", "/", "validate"], capture_output=True, text=True)
    assert loaded.stdout.split() == ["['sriov_node.cli.app',", "'sriov_node.cli.converge',",
                                     "'sriov_node.cli.signals']"], loaded.stderr
