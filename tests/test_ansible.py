"""The Ansible role and playbook (deploy/ansible/) against a fleet of five simulated nodes
(connection local, each node a simulated host under its own root prefix): a clean canary-first
roll-out, a second run with nothing changed, check mode writing nothing, a node whose probe fails
rolled back with the roll-out stopped and the nodes not yet reached untouched, a node whose config
does not fit failing at validate with nothing written; and ansible-lint's production profile."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from sriov_node.sim.build import create_host
from tests.helpers import CLI, PF0 as PF

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "deploy" / "ansible"
BIN = Path(sys.executable).parent
NODES = [f"node{i}" for i in range(1, 6)]

FOUR = '[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n'
EIGHT = '[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n  [[pf.vfs]]\n  range = "0-7"\n  driver = "vfio-pci"\n'
MISSING_PF = '[[pf]]\nname = "ens9f0"\nnum_vfs = 8\n'


class Fleet:
    def __init__(self, base: Path):
        self.base = base
        self.roots = {n: base / n for n in NODES}
        for root in self.roots.values():
            create_host(str(root), (("x710", 2, None),))
        (base / "ansible").mkdir()

    def inventory(self, configs: Dict[str, str], probes: Dict[str, List[str]] = None) -> Path:
        hosts = {}
        for node in NODES:
            path = self.base / f"{node}.toml"
            path.write_text(configs[node])
            hosts[node] = {"sriov_node_root": str(self.roots[node]), "sriov_node_config_file": str(path),
                           "sriov_node_probes": (probes or {}).get(node, [])}
        inventory = {"sriov_nodes": {"vars": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "sriov_node_bin": CLI, "sriov_node_checkpoint_seconds": 600}, "hosts": hosts}}
        path = self.base / "inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        return path

    def play(self, inventory: Path, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "ANSIBLE_HOME": str(self.base / "ansible"), "ANSIBLE_ROLES_PATH": str(ANSIBLE / "roles"),
               "ANSIBLE_LOCAL_TEMP": str(self.base / "ansible/tmp"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
        env = {k: v for k, v in env.items() if not k.startswith("SRIOV_NODE_")}
        return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(ANSIBLE / "site.yml"),
                               "-e", "sriov_node_become=false", *args],
                              capture_output=True, text=True, timeout=900, env=env)

    def numvfs(self, node: str) -> int:
        return int((self.roots[node] / f"sys/bus/pci/devices/{PF}/sriov_numvfs").read_text())

    def config(self, node: str) -> str:
        path = self.roots[node] / "etc/sriov-node/config.toml"
        return path.read_text() if path.exists() else ""

    def writes(self, node: str) -> int:
        log = self.roots[node] / ".sriov-node-sim.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def history(self, node: str) -> list:
        out = subprocess.run([CLI, "--root", str(self.roots[node]), "history", "--json"], capture_output=True, text=True)
        return json.loads(out.stdout)["generations"]


def recap(output: str) -> Dict[str, Dict[str, int]]:
    """PLAY RECAP lines: {host: {ok, changed, failed, ...}}."""
    out: Dict[str, Dict[str, int]] = {}
    for line in output.split("PLAY RECAP", 1)[-1].splitlines():
        m = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if m:
            out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Fleet:
    if not (BIN / "ansible-playbook").exists():
        pytest.fail("ansible-core is in the test extras: scripts/setup installs it")
    return Fleet(tmp_path_factory.mktemp("fleet"))


def test_a_clean_roll_out_then_a_second_run_changes_nothing(fleet):
    inventory = fleet.inventory({n: FOUR for n in NODES})
    first = fleet.play(inventory)
    assert first.returncode == 0, first.stdout[-4000:]
    for node in NODES:
        assert fleet.numvfs(node) == 4 and fleet.config(node) == FOUR
        assert [g["command"] for g in fleet.history(node)] == ["apply"]
    assert all(r["changed"] > 0 and r["failed"] == 0 for r in recap(first.stdout).values())
    # canary first: the first batch is one host
    batches = re.findall(r"^PLAY \[.*?\]", first.stdout, re.M)
    assert len(batches) >= 3, batches
    writes = {n: fleet.writes(n) for n in NODES}
    again = fleet.play(inventory)
    assert again.returncode == 0, again.stdout[-4000:]
    assert all(r["changed"] == 0 for r in recap(again.stdout).values()), again.stdout[-3000:]
    assert {n: fleet.writes(n) for n in NODES} == writes


def test_check_mode_shows_the_diff_and_writes_nothing(fleet):
    inventory = fleet.inventory({n: EIGHT for n in NODES})
    before = {n: (fleet.writes(n), fleet.config(n), len(fleet.history(n))) for n in NODES}
    check = fleet.play(inventory, "--check", "--diff")
    assert check.returncode == 0, check.stdout[-4000:]
    assert "+num_vfs = 8" in check.stdout and "-num_vfs = 4" in check.stdout
    assert all(r["changed"] > 0 for r in recap(check.stdout).values())  # the host would change
    assert {n: (fleet.writes(n), fleet.config(n), len(fleet.history(n))) for n in NODES} == before


def test_a_failed_probe_rolls_the_node_back_and_stops_the_roll_out(fleet):
    # node3's probe fails after its apply; nodes 1 and 2 were done before it, 4 and 5 are not reached
    inventory = fleet.inventory({n: EIGHT for n in NODES}, probes={n: ["test -d /"] for n in NODES} | {
        "node3": ["test -d /", f"test -e {fleet.base}/no-such-file"]})
    untouched = {n: fleet.writes(n) for n in ("node4", "node5")}
    run = fleet.play(inventory)
    assert run.returncode != 0
    assert "rolled back to the previous generation" in run.stdout
    for node in ("node1", "node2"):
        assert fleet.numvfs(node) == 8 and fleet.config(node) == EIGHT
        assert fleet.history(node)[-1]["checkpoint"]["state"] == "committed"
    # node3: file and host as before the roll-out (its previous generation)
    assert fleet.numvfs("node3") == 4 and fleet.config("node3") == FOUR
    assert fleet.history("node3")[-1]["command"] == "rollback"
    for node in ("node4", "node5"):
        assert fleet.writes(node) == untouched[node] and fleet.config(node) == FOUR and fleet.numvfs(node) == 4
    assert set(recap(run.stdout)) == {"node1", "node2", "node3"}


def test_a_config_that_does_not_fit_fails_at_validate_with_nothing_written(tmp_path):
    fleet = Fleet(tmp_path)
    configs = {n: FOUR for n in NODES}
    configs["node1"] = MISSING_PF  # the canary's NIC is not there
    run = fleet.play(fleet.inventory(configs))
    assert run.returncode != 0
    assert "ens9f0" in run.stdout and "Validate the candidate" in run.stdout
    for node in NODES:
        assert fleet.writes(node) == 0 and fleet.config(node) == "" and fleet.history(node) == []
    assert set(recap(run.stdout)) == {"node1"}  # the roll-out stopped at the canary


def test_ansible_lint_production_profile_is_clean():
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.fail("ansible-lint is in the test extras: scripts/setup installs it")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    proc = subprocess.run([str(lint), "--profile", "production", "--offline", "."], cwd=ANSIBLE,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout
