"""The Ansible role and playbook (deploy/ansible/) against fleets of simulated nodes (connection
local, each node a simulated host under its own root prefix): a clean canary-first roll-out, a
second run with nothing changed, check mode writing nothing, a node whose probe fails rolled back
(the message naming the probe) with the roll-out stopped and the nodes not yet reached untouched,
a node whose config does not fit failing at validate with nothing written; the failure budget
within batches of several hosts, the batches and budget from the group's variables, the rescue's
rollback to the generation read before the apply (after an expired checkpoint, on a first roll-out,
when the rollback fails), a checkpoint shorter than the batch's slowest probe, the example
inventory, the docs' recipe; and ansible-lint's production profile."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

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
    def __init__(self, base: Path, nodes: List[str] = NODES):
        self.base = base
        self.nodes = list(nodes)
        self.roots = {n: base / n for n in self.nodes}
        for root in self.roots.values():
            create_host(str(root), (("x710", 2, None),))
        (base / "ansible").mkdir()

    def inventory(self, configs: Dict[str, str], probes: Dict[str, List[str]] = None,
                  group: Dict[str, Any] = None, per_host: Dict[str, Dict[str, Any]] = None) -> Path:
        hosts = {}
        for node in self.nodes:
            path = self.base / f"{node}.toml"
            path.write_text(configs[node])
            hosts[node] = {"sriov_node_root": str(self.roots[node]), "sriov_node_config_file": str(path),
                           "sriov_node_probes": (probes or {}).get(node, []), **(per_host or {}).get(node, {})}
        inventory = {"sriov_nodes": {"vars": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "sriov_node_bin": CLI, "sriov_node_checkpoint_seconds": 600, **(group or {})}, "hosts": hosts}}
        path = self.base / "inventory.yml"
        path.write_text(yaml.safe_dump(inventory))
        return path

    def seed(self, config: str, nodes: List[str] = None) -> None:
        """The nodes (all by default) applied `config` by hand: generation 1, what a failed roll-out goes back to."""
        for root in (self.roots[n] for n in (nodes or self.nodes)):
            path = root / "etc/sriov-node/config.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(config)
            subprocess.run([CLI, "--root", str(root), "apply"], check=True, capture_output=True)

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


def failure(output: str, host: str) -> str:
    """The message of `host`'s failure (the role's "Fail this host" task), whitespace folded."""
    found = re.findall(r"^fatal: \[%s\]: FAILED! =>.*?^\s*msg: (.*?)(?=^\S)" % re.escape(host), output, re.M | re.S)
    assert found, f"no failure for {host}: " + output[-4000:]
    text = " ".join(found[-1].split())
    if text.startswith("'") or text.startswith('"'):
        text = yaml.safe_load(text)
    return " ".join(text.split())


def batches(output: str) -> List[List[str]]:
    """The hosts of each batch of the roll-out play, batch by batch (the lines naming a host under each
    "PLAY [Roll out ...]" header); within a batch, sorted: its hosts run in parallel forks, in no set order."""
    out = []
    for part in re.split(r"^PLAY \[", output, flags=re.M)[1:]:
        if part.startswith("Roll out"):
            hosts = re.findall(r"^(?:ok|changed|fatal|skipping): \[([^\]]+)\]", part, re.M)
            out.append(sorted(set(hosts), key=lambda h: (len(h), h)))
    return out


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
    assert batches(first.stdout)[0] == ["node1"] and len(batches(first.stdout)) >= 3, batches(first.stdout)
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
    bad = f"test -e {fleet.base}/no-such-file || {{ echo 'no VF answers ping' >&2; exit 7; }}"
    inventory = fleet.inventory({n: EIGHT for n in NODES}, probes={n: ["test -d /"] for n in NODES} | {
        "node3": ["test -d /", bad]})
    untouched = {n: fleet.writes(n) for n in ("node4", "node5")}
    run = fleet.play(inventory)
    assert run.returncode != 0
    # the message names the probe (its command line), its exit code and its stderr, and the rollback's target
    message = failure(run.stdout, "node3")
    assert f"probe `{bad}` failed (exit 7: no VF answers ping)" in message, message
    assert "One or more items failed" not in message
    assert "rolled back to generation 1 " in message, message
    for node in ("node1", "node2"):
        assert fleet.numvfs(node) == 8 and fleet.config(node) == EIGHT
        assert fleet.history(node)[-1]["checkpoint"]["state"] == "committed"
    # node3: file and host as before the roll-out (its previous generation)
    assert fleet.numvfs("node3") == 4 and fleet.config("node3") == FOUR
    assert fleet.history("node3")[-1]["command"] == "rollback"
    assert fleet.history("node3")[-1]["restored_from"] == 1
    for node in ("node4", "node5"):
        assert fleet.writes(node) == untouched[node] and fleet.config(node) == FOUR and fleet.numvfs(node) == 4
    assert set(recap(run.stdout)) == {"node1", "node2", "node3"}


EIGHT_NODES = [f"node{i}" for i in range(1, 9)]


@pytest.mark.parametrize("budget, failing", [(None, ["node3"]), (34, ["node2", "node3"])],
                         ids=["default-budget-one-failure", "budget-34-two-failures-of-three"])
def test_the_failure_budget_stops_the_roll_out_within_a_batch_of_several_hosts(tmp_path, budget, failing):
    # serial [1, 3, 4] (from the group's variables): node1 | node2 node3 node4 | node5 .. node8.
    # A failure in batch 2 spends the budget (0: any failure; 34 %: two of three): batch 3 never runs.
    fleet = Fleet(tmp_path, EIGHT_NODES)
    fleet.seed(FOUR)
    group: Dict[str, Any] = {"sriov_node_serial": [1, 3, 4]}
    if budget is not None:
        group["sriov_node_max_fail_percentage"] = budget
    probes = {n: [f"test -e {tmp_path}/no-such-file"] for n in failing}
    untouched = {n: fleet.writes(n) for n in EIGHT_NODES[4:]}
    run = fleet.play(fleet.inventory({n: EIGHT for n in EIGHT_NODES}, probes, group=group))
    assert run.returncode != 0
    assert batches(run.stdout) == [["node1"], ["node2", "node3", "node4"]], (batches(run.stdout), run.stdout[:6000])
    for node in ("node1", "node2", "node3", "node4"):
        if node in failing:
            assert "rolled back to generation 1 " in failure(run.stdout, node)
            assert fleet.numvfs(node) == 4 and fleet.config(node) == FOUR
        else:  # ran in step with the failed ones and passed: committed
            assert fleet.numvfs(node) == 8 and fleet.config(node) == EIGHT
            assert fleet.history(node)[-1]["checkpoint"]["state"] == "committed"
    for node in EIGHT_NODES[4:]:
        assert fleet.writes(node) == untouched[node] and fleet.config(node) == FOUR and fleet.numvfs(node) == 4
        assert len(fleet.history(node)) == 1
    assert {n for n, r in recap(run.stdout).items() if r["failed"]} == set(failing)


def test_a_failure_within_the_budget_lets_the_roll_out_go_on(tmp_path):
    # the same batches and a 34 % budget, given with -e: one failure of three does not spend it
    fleet = Fleet(tmp_path, EIGHT_NODES)
    fleet.seed(FOUR)
    inventory = fleet.inventory({n: EIGHT for n in EIGHT_NODES}, {"node3": [f"test -e {tmp_path}/no-such-file"]})
    run = fleet.play(inventory, "-e", json.dumps({"sriov_node_serial": [1, 3, 4], "sriov_node_max_fail_percentage": 34}))
    assert run.returncode != 0  # a host failed
    assert batches(run.stdout) == [["node1"], ["node2", "node3", "node4"], EIGHT_NODES[4:]], run.stdout[-4000:]
    assert fleet.numvfs("node3") == 4 and fleet.config("node3") == FOUR
    for node in set(EIGHT_NODES) - {"node3"}:
        assert fleet.numvfs(node) == 8 and fleet.config(node) == EIGHT


def test_batches_and_budget_are_one_for_the_roll_out_a_host_of_its_own_is_refused(tmp_path):
    # play keywords take one value: a host that sets its own would be ignored, so the run is refused
    nodes = NODES[:3]
    fleet = Fleet(tmp_path, nodes)
    run = fleet.play(fleet.inventory({n: FOUR for n in nodes}, group={"sriov_node_serial": [1, 2]},
                                     per_host={"node2": {"sriov_node_max_fail_percentage": 50}}))
    assert run.returncode != 0
    message = " ".join(run.stdout.split())
    assert "set them for the group (or with -e), not per host" in message, run.stdout[-3000:]
    assert "node2 serial [1, 2] budget 50" in message and "node1 serial [1, 2] budget unset" in message
    for node in nodes:
        assert fleet.writes(node) == 0 and fleet.config(node) == "" and fleet.history(node) == []


def test_the_rescue_rolls_back_to_the_generation_read_before_the_apply_and_says_what_happened(tmp_path):
    # One batch of three, budget 100 %, each node's change failing its own way:
    #  node1: the checkpoint expires during the probes (the probe runs what the host's timer runs),
    #         so commit fails; a bare `rollback` would now re-apply the expired candidate
    #  node2: its first roll-out (no generation before): nothing to roll back to
    #  node3: its probe fails and its rollback fails too (a command that refuses `rollback`)
    nodes = NODES[:3]
    fleet = Fleet(tmp_path, nodes)
    fleet.seed(FOUR, ["node1", "node3"])
    wrapper = tmp_path / "no-rollback"
    wrapper.write_text(f"#!/bin/sh\nif [ \"$3\" = rollback ]; then echo 'rollback: disk on fire' >&2; exit 1; fi\n"
                       f"exec {CLI} \"$@\"\n")
    wrapper.chmod(0o755)
    expire = f"{CLI} --root {fleet.roots['node1']} rollback --if-uncommitted 2 >/dev/null"
    run = fleet.play(fleet.inventory(
        {n: EIGHT for n in nodes},
        probes={"node1": [expire], "node2": ["echo first >&2; exit 1"], "node3": ["exit 1"]},
        group={"sriov_node_serial": [3], "sriov_node_max_fail_percentage": 100},
        per_host={"node3": {"sriov_node_bin": str(wrapper)}}))
    assert run.returncode != 0
    # node1: back at generation 1's config, whatever the expiry had done; the message says which
    said = failure(run.stdout, "node1")
    assert "Commit the checkpoint failed" in said and "expired" in said, said
    assert re.search(r"(rolled back to generation 1 |already at generation 1's config)", said), said
    assert fleet.numvfs("node1") == 4 and fleet.config("node1") == FOUR
    assert fleet.history("node1")[-1]["config"] == FOUR
    status = subprocess.run([CLI, "--root", str(fleet.roots["node1"]), "status", "--exit-code"], capture_output=True)
    assert status.returncode == 0, status.stdout
    # node2: said so, and kept what its run did
    said = failure(run.stdout, "node2")
    assert "probe `echo first >&2; exit 1` failed (exit 1: first)" in said, said
    assert "no generation before this run, so nothing to roll back to" in said, said
    assert fleet.numvfs("node2") == 8
    # node3: the rollback's own error
    said = failure(run.stdout, "node3")
    assert "ROLLBACK FAILED: rollback: disk on fire" in said and "sriov-node rollback 1" in said, said


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


def test_a_fast_host_whose_checkpoint_does_not_cover_the_batch_s_slowest_probe_rolls_back(tmp_path):
    # docs/fleet.md, "The checkpoint and the batch": a batch runs in step, so node1's commit waits for
    # node2's 12 s probe and comes after node1's 8 s checkpoint ran out, though node1's own probe took
    # no time: node1 is rolled back and fails (safe); node2's own probe outlasts its checkpoint as well.
    nodes = NODES[:2]
    fleet = Fleet(tmp_path, nodes)
    fleet.seed(FOUR)
    run = fleet.play(fleet.inventory({n: EIGHT for n in nodes}, {"node1": ["true"], "node2": ["sleep 12"]},
                                     group={"sriov_node_serial": [2], "sriov_node_checkpoint_seconds": 8}))
    assert run.returncode != 0
    said = failure(run.stdout, "node1")
    assert "Commit the checkpoint failed" in said and "ran out" in said and "rolled back to generation 1 " in said, said
    assert fleet.numvfs("node1") == 4 and fleet.config("node1") == FOUR
    # and both places an operator reads say so
    defaults = (ANSIBLE / "roles/sriov_node/defaults/main.yml").read_text()
    assert "slowest host of its batch" in defaults and "ceil(batch size / forks)" in defaults
    doc = " ".join((REPO / "docs/fleet.md").read_text().split())
    assert "**The checkpoint and the batch.**" in doc and "slowest host of its batch" in doc


def test_the_example_inventory_names_files_that_exist_and_fit(tmp_path):
    # inventory/example.yml as shipped, in check mode, its two workers pointed at one simulated host
    example = ANSIBLE / "inventory/example.yml"
    files = [h["sriov_node_config_file"] for h in yaml.safe_load(example.read_text())["sriov_nodes"]["hosts"].values()]
    assert files and all((ANSIBLE / f).is_file() for f in files), files
    fleet = Fleet(tmp_path, ["sim"])
    run = fleet.play(example, "--check", "--diff", "-e", json.dumps({
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "sriov_node_install": "none",
        "sriov_node_bin": CLI, "sriov_node_root": str(fleet.roots["sim"])}))
    assert run.returncode == 0, run.stdout[-4000:]
    assert set(recap(run.stdout)) == {"worker-1", "worker-2"}
    assert "+num_vfs = 8" in run.stdout and '+name = "ens1f1"' in run.stdout  # worker-1's and worker-2's files
    assert fleet.writes("sim") == 0 and fleet.config("sim") == "" and fleet.history("sim") == []


def test_the_docs_recipe_for_simulated_nodes_runs_as_written(tmp_path):
    doc = (REPO / "docs/fleet.md").read_text()
    recipe = re.search(r"### Try it on simulated nodes\n.*?```sh\n(.*?)```", doc, re.S).group(1)
    assert "FLEET=/tmp/sriov-fleet\n" in recipe
    recipe = recipe.replace("FLEET=/tmp/sriov-fleet\n", f"FLEET={tmp_path}/fleet\n")
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible/tmp"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    env = {k: v for k, v in env.items() if not k.startswith("SRIOV_NODE_")}
    run = subprocess.run(["bash", "-c", recipe], cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    out = run.stdout
    assert out.count("PLAY RECAP") == 3, out[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, run.stderr[-2000:]  # the last command, history, succeeds
    assert "rolled back to generation 1 " in " ".join(out.split()), out[-4000:]
    worker1, worker2 = ((ANSIBLE / f"nodes/worker-{i}.toml").read_text() for i in (1, 2))
    fleet_dir = tmp_path / "fleet"
    config = {n: (fleet_dir / n / "etc/sriov-node/config.toml").read_text() for n in ("node1", "node2", "node3", "node4")}
    assert config == {"node1": worker2, "node2": worker2, "node3": worker1, "node4": worker2}


def test_ansible_lint_production_profile_is_clean():
    lint = BIN / "ansible-lint"
    if not lint.exists():
        pytest.fail("ansible-lint is in the test extras: scripts/setup installs it")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "NO_COLOR": "1"}
    proc = subprocess.run([str(lint), "--profile", "production", "--offline", "."], cwd=ANSIBLE,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Profile 'production' was required, and it passed" in proc.stderr + proc.stdout
