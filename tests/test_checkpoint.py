"""Day 2 on the simulated host, through the console script: generations recorded by each command,
rollback (file and host, each kind of change), checkpoints (committed, expired, across a reboot),
status against the applied generation, and the exit codes automation reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sriov_node import generations
from tests.helpers import open_host
from sriov_node.host.observe import observe
from sriov_node.sim.kernel import SimKernel
from tests.helpers import run_cli, sim_writes

X710, E810, CX5 = "0000:20:00.0", "0000:30:00.0", "0000:40:00.0"

# (kind, PF, config A, config B): rollback from B must give back A's file bytes and A's host
KINDS = [
    ("count", X710,
     '[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n',
     '[[pf]]\nname = "ens1f0"\nnum_vfs = 6\n'),
    ("driver", X710,
     '[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "iavf"\n',
     '[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-1"\n  driver = "vfio-pci"\n'
     '  [[pf.vfs]]\n  range = "2-3"\n  driver = "none"\n'),
    ("vf-settings", CX5,
     '[[pf]]\nname = "ens3f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0"\n  vlan = 100\n  trust = true\n'
     '  mac = "02:00:00:00:00:01"\n  [[pf.vfs]]\n  range = "1"\n  vlan = 101\n',
     '[[pf]]\nname = "ens3f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0"\n  vlan = 200\n  trust = false\n'
     '  mac = "02:00:00:00:00:02"\n  [[pf.vfs]]\n  range = "1"\n  vlan = 201\n'),
    ("eswitch", E810,
     '[[pf]]\nname = "ens2f0"\nnum_vfs = 2\neswitch_mode = "legacy"\n',
     '[[pf]]\nname = "ens2f0"\nnum_vfs = 2\neswitch_mode = "switchdev"\n'),
]


@pytest.fixture
def host(make_host):
    return make_host(("x710", 1, None), ("e810", 1, None), ("cx5", 1, None), vfio_loaded=True)


@pytest.fixture
def config(host):
    path = Path(host.root) / "etc/sriov-node/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def cli(host, *args):
    return run_cli(*args, root=host.root)


def read_host(host, pf):
    """What the kernel reads back for a PF: VF count, each VF's driver, VF settings, eswitch mode."""
    h = open_host(host.root)
    seen = observe(h).pf(pf)
    settings = {}
    if seen.netdevs and seen.num_vfs:
        settings = {i: (v.mac, v.vlan, v.trust) for i, v in h.links.vf_links(seen.netdevs[0]).items()}
    try:
        eswitch = h.devlink.eswitch_mode(f"pci/{pf}")
    except OSError:  # a driver without devlink eswitch ops (i40e)
        eswitch = None
    return (seen.num_vfs, [vf.driver for vf in seen.vfs], settings, eswitch)


def gens(host):
    body = json.loads(cli(host, "history", "--json").stdout)
    return [(g["number"], g["command"], g["outcome"], g["restored_from"]) for g in body["generations"]]


def applied(host, config, text, *extra):
    config.write_text(text)
    proc = cli(host, "apply", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# ---------------------------------------------------------------------------- rollback, every kind of change


@pytest.mark.parametrize("kind,pf,a,b", KINDS, ids=[k[0] for k in KINDS])
def test_rollback_restores_the_file_bytes_and_the_host_for_each_kind_of_change(host, config, kind, pf, a, b):
    applied(host, config, a)
    before = read_host(host, pf)
    applied(host, config, b)
    assert read_host(host, pf) != before

    proc = cli(host, "rollback")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored generation 1 as generation 3" in proc.stdout
    assert config.read_text() == a
    assert read_host(host, pf) == before
    assert gens(host) == [(1, "apply", "converged", None), (2, "apply", "converged", None),
                          (3, "rollback", "converged", 1)]
    assert json.loads(cli(host, "apply", "--json").stdout)["writes"] == 0  # the file and the host agree


def test_rollback_to_a_given_generation_and_through_a_symlinked_config(host, config, tmp_path):
    real = tmp_path / "real.toml"
    config.symlink_to(real)
    texts = [KINDS[0][2], KINDS[0][3], KINDS[1][3]]
    for text in texts:
        applied(host, config, text)
    proc = cli(host, "rollback", "2")
    assert proc.returncode == 0, proc.stderr
    assert config.is_symlink() and real.read_text() == texts[1]
    assert read_host(host, X710)[0] == 6
    assert gens(host)[-1] == (4, "rollback", "converged", 2)
    missing = cli(host, "rollback", "99")
    assert missing.returncode == 1 and "generation 99 does not exist; see sriov-node history" in missing.stderr


def test_a_refused_rollback_changes_nothing(host, config):
    a = '[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  driver = "vfio-pci"\n'
    b = '[[pf]]\nname = "ens1f0"\nnum_vfs = 3\n  [[pf.vfs]]\n  range = "0-2"\n  driver = "vfio-pci"\n'
    applied(host, config, a)
    applied(host, config, b)
    SimKernel(host.root).hold_vf(open_host(host.root).sysfs.vf_address(X710, 0), 4242)  # a VM has VF 0
    writes = len(sim_writes(host))
    before = read_host(host, X710)

    proc = cli(host, "rollback")

    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "refusing to disable all VFs while VFs are in use" in proc.stderr and "--force" in proc.stderr
    assert "generation 1 not restored: nothing was changed" in proc.stdout
    assert config.read_text() == b
    assert read_host(host, X710) == before and len(sim_writes(host)) == writes
    assert [g[0] for g in gens(host)] == [1, 2]

    SimKernel(host.root).release(4242)
    assert cli(host, "rollback").returncode == 0
    assert config.read_text() == a and read_host(host, X710)[0] == 2


# ---------------------------------------------------------------------------- history after each command


def test_history_after_each_command(host, config):
    a, b = KINDS[0][2], KINDS[0][3]
    applied(host, config, a)
    assert gens(host) == [(1, "apply", "converged", None)]
    applied(host, config, a)  # the same config converged again: no new generation
    assert gens(host) == [(1, "apply", "converged", None)]
    applied(host, config, b)
    assert [g[1] for g in gens(host)] == ["apply", "apply"]
    assert cli(host, "rollback").returncode == 0
    assert gens(host)[-1] == (3, "rollback", "converged", 1)
    applied(host, config, b, "--checkpoint", "600")
    assert gens(host)[-1] == (4, "apply", "converged", None)
    assert cli(host, "commit").returncode == 0
    open_host(host.root).sysfs.set_num_vfs(X710, 0)  # a reboot: the VFs are gone
    assert cli(host, "boot", "--wait", "5").returncode == 0
    assert [g[0] for g in gens(host)] == [1, 2, 3, 4]  # the same file: boot converged to generation 4
    config.write_text(a)
    assert cli(host, "boot", "--wait", "5").returncode == 0  # edited while the node was down
    assert gens(host)[-1] == (5, "boot", "converged", None)
    failed = '[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf]]\npci = "0000:99:00.0"\nnum_vfs = 1\n'
    config.write_text(failed)
    assert cli(host, "apply").returncode == 1  # a block failed, the other PF was written
    assert gens(host)[-1] == (6, "apply", "failed", None)
    config.write_text("num_vfs = [")
    assert cli(host, "apply").returncode == 2  # invalid: nothing recorded
    assert cli(host, "apply", "--dry-run").returncode == 2
    assert len(gens(host)) == 6

    text = cli(host, "history").stdout.splitlines()
    assert text[0].split() == ["GEN", "TIME", "COMMAND", "OUTCOME", "SHA256", "NOTE"]
    assert text[3].split()[3:5] == ["rollback", "converged"] and "restores 1" in text[3]
    assert "checkpoint committed" in text[4]
    assert text[-1].startswith("*   6") and text[-1].endswith("current")


def test_history_diff_is_the_toml_diff_against_the_current_generation(host, config):
    applied(host, config, KINDS[0][2])
    applied(host, config, KINDS[0][3])
    proc = cli(host, "history", "--diff", "1")
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[1:] == ["+++ generation 2 (current)", "@@ -1,3 +1,3 @@", ' [[pf]]',
                                            ' name = "ens1f0"', "-num_vfs = 4", "+num_vfs = 6"]
    assert proc.stdout.startswith("--- generation 1 (apply, ")
    same = cli(host, "history", "--diff", "2")
    assert same.stdout == "generation 2 has the same config as the current generation 2\n"
    body = json.loads(cli(host, "history", "--diff", "1", "--json").stdout)
    assert (body["from"], body["to"], body["same"]) == (1, 2, False) and "+num_vfs = 6" in body["diff"]


def test_history_is_bounded_by_the_config(host, config):
    for n in range(1, 7):
        applied(host, config, f'[history]\nkeep = 3\n[[pf]]\nname = "ens1f0"\nnum_vfs = {n}\n')
    assert [g[0] for g in gens(host)] == [4, 5, 6]
    bad = cli(host, "validate") if config.write_text('[history]\nkeep = 0\n') else None
    assert bad.returncode == 2 and "history.keep: must be from 1 to 10000, got 0" in bad.stderr


# ---------------------------------------------------------------------------- checkpoints


A, B = KINDS[1][2], KINDS[1][3]


def test_a_committed_checkpoint_stays_and_the_timer_then_does_nothing(host, config):
    applied(host, config, A)
    proc = applied(host, config, B, "--checkpoint", "600")
    assert "generation 2 (apply, converged): checkpoint; run sriov-node commit within 600 s" in proc.stdout
    assert f"run sriov-node --root {host.root} rollback --if-uncommitted 2" in proc.stdout  # no timer under --root
    status = json.loads(cli(host, "status", "--json").stdout)
    assert status["checkpoint"]["previous"] == 1 and status["checkpoint"]["state"] == "pending"
    b_host = read_host(host, X710)

    assert cli(host, "commit").stdout == "generation 2 committed: it stays\n"
    late = cli(host, "rollback", "--if-uncommitted", "2")  # the timer fires after the commit

    assert late.returncode == 0 and "nothing to do" in late.stdout
    assert config.read_text() == B and read_host(host, X710) == b_host
    assert [g[0] for g in gens(host)] == [1, 2]
    assert generations.get(open_host(host.root), 2).checkpoint["state"] == "committed"
    assert json.loads(cli(host, "status", "--json").stdout)["checkpoint"] is None


def test_an_uncommitted_checkpoint_is_rolled_back_by_the_timers_command(host, config):
    applied(host, config, A)
    a_host = read_host(host, X710)
    applied(host, config, B, "--checkpoint", "600")

    proc = cli(host, "rollback", "--if-uncommitted", "2")

    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == A and read_host(host, X710) == a_host
    assert gens(host)[-1] == (3, "checkpoint-expired", "converged", 1)
    assert generations.get(open_host(host.root), 2).checkpoint["state"] == "expired"
    again = cli(host, "rollback", "--if-uncommitted", "2")
    assert again.returncode == 0 and "nothing to do" in again.stdout and len(gens(host)) == 3
    late = cli(host, "commit")
    assert late.returncode == 1 and "generation 2's checkpoint expired" in late.stderr


def test_commit_past_the_deadline_says_the_rollback_is_due(host, config):
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "0.001")
    proc = cli(host, "commit")
    assert proc.returncode == 1
    assert "ran out" in proc.stderr and "rollback --if-uncommitted 2" in proc.stderr


def test_boot_with_an_uncommitted_past_deadline_checkpoint_restores_the_previous_generation(host, config):
    applied(host, config, A)
    a_host = read_host(host, X710)
    applied(host, config, B, "--checkpoint", "0.001")
    open_host(host.root).sysfs.set_num_vfs(X710, 0)  # the reboot

    proc = cli(host, "boot", "--wait", "5", "--json")

    assert proc.returncode == 0, proc.stderr
    assert "generation 2 is a checkpoint that was not committed before the reboot: restoring generation 1" \
        in proc.stderr
    assert config.read_text() == A and read_host(host, X710) == a_host
    assert json.loads(proc.stdout)["generation"] == 3
    assert gens(host)[-1] == (3, "boot", "converged", 1)
    assert generations.get(open_host(host.root), 2).checkpoint["state"] == "expired"


def test_a_checkpoint_needs_a_generation_to_fall_back_to(host, config):
    config.write_text(A)
    proc = cli(host, "apply", "--checkpoint", "60")
    assert proc.returncode == 2 and "no applied generation to fall back to" in proc.stderr
    assert sim_writes(host) == [] and gens(host) == []


def test_the_daemons_expiry_is_the_same_function(host, config):
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "600")
    h = open_host(host.root)
    assert generations.expire_checkpoint(h, 1, timeout=10) is None  # not the pending one
    result = generations.expire_checkpoint(h, 2, timeout=10)
    assert result.exit_code == 0 and result.generation.number == 3 and result.target.number == 1
    assert config.read_text() == A


# ---------------------------------------------------------------------------- status and exit codes


def test_status_names_an_edited_file_that_is_not_applied_and_compares_with_the_generation(host, config):
    assert cli(host, "status", "--exit-code").returncode == 1  # nothing applied
    applied(host, config, A)
    assert cli(host, "status", "--exit-code").returncode == 0
    config.write_text(B)

    text = cli(host, "status")
    body = json.loads(cli(host, "status", "--json").stdout)
    code = cli(host, "status", "--exit-code").returncode

    assert "config.toml differs from the applied generation 1: run sriov-node apply" in text.stdout
    assert "compared with the applied generation 1 (apply, " in text.stdout
    assert (body["applied_generation"], body["config_differs"]) == (1, True)
    assert body["compared_with"]["generation"] == 1
    assert body["converged"] is True  # the host is what generation 1 wants: the file is not applied yet
    assert code == 1
    applied(host, config, B)
    assert cli(host, "status", "--exit-code").returncode == 0
    open_host(host.root).sysfs.set_num_vfs(X710, 0)  # the host drifts
    drift = cli(host, "status", "--exit-code")
    assert drift.returncode == 1 and "DIFFERS" in drift.stdout


def test_detailed_exitcode_of_a_dry_run(make_host, config_for):
    host = make_host(("x710", 1, None), iommu=False)
    config = config_for(host)

    def dry():
        return run_cli("apply", "--dry-run", "--detailed-exitcode", root=host.root).returncode

    config.write_text(KINDS[0][2])
    assert dry() == 2  # changes pending
    assert run_cli("apply", root=host.root).returncode == 0
    assert dry() == 0  # nothing to do
    config.write_text(KINDS[0][2] + "# a comment\n")
    assert dry() == 2  # the host is right, but the file is not the applied generation
    config.write_text(KINDS[0][3])
    assert dry() == 2
    config.write_text(KINDS[1][3])  # vfio-pci without an IOMMU: apply would refuse
    assert dry() == 3
    config.write_text(KINDS[0][2] + '[[pf]]\npci = "0000:99:00.0"\nnum_vfs = 1\n')
    assert dry() == 1  # a block that cannot apply here
    config.write_text("num_vfs = [")
    assert dry() == 1  # invalid: an error, not "changes pending"
    assert run_cli("apply", "--detailed-exitcode", root=host.root).returncode == 2  # only with --dry-run


@pytest.fixture
def config_for():
    def _config(host):
        path = Path(host.root) / "etc/sriov-node/config.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return _config


# ---------------------------------------------------------------------------- unsafe records


def test_a_fifo_or_symlink_in_place_of_a_record_is_refused_by_every_command(host, config, tmp_path):
    applied(host, config, A)
    record = Path(generations.directory(open_host(host.root))) / "00000002.json"
    os.mkfifo(record)
    for args in (("history",), ("rollback",), ("commit",)):
        proc = cli(host, *args)  # would hang on open() if the FIFO were opened for reading
        assert proc.returncode == 1 and f"{record}: is a FIFO, not a regular file" in proc.stderr, args
    status = cli(host, "status")
    assert "the applied generation cannot be read" in status.stdout and str(record) in status.stdout
    record.unlink()
    secret = tmp_path / "elsewhere.json"
    secret.write_text("{}")
    record.symlink_to(secret)
    proc = cli(host, "history")
    assert proc.returncode == 1 and "is a symbolic link; refused" in proc.stderr
    config.write_text(B)
    apply = cli(host, "apply")  # the newest record cannot be read: nothing is converged on a guess
    assert apply.returncode == 1 and "is a symbolic link; refused" in apply.stderr and secret.read_text() == "{}"


@pytest.mark.parametrize("broken", ["num_vfs = [", None], ids=["invalid", "missing"])
def test_boot_with_a_file_broken_while_the_node_was_down_converges_to_the_applied_generation(host, config, broken):
    applied(host, config, A)
    a_host = read_host(host, X710)
    open_host(host.root).sysfs.set_num_vfs(X710, 0)  # the reboot
    if broken is None:
        config.unlink()
    else:
        config.write_text(broken)

    proc = cli(host, "boot", "--wait", "5")

    assert proc.returncode == 2  # the unit fails visibly ...
    assert "converging to the applied generation 1 instead" in proc.stderr
    assert read_host(host, X710) == a_host  # ... and the node comes up as it was
    assert [g[0] for g in gens(host)] == [1]


def test_an_overdue_checkpoint_says_so_and_fails_the_exit_code(host, config):
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "600")
    pending = cli(host, "status")
    assert "checkpoint: generation 2 is restored to generation 1 at " in pending.stdout and "overdue" not in pending.stdout
    assert cli(host, "status", "--exit-code").returncode == 0  # pending, not yet due
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "0.001")  # generation 4, its deadline passed; nobody restored it

    text = cli(host, "status")
    body = json.loads(cli(host, "status", "--json").stdout)
    history = cli(host, "history")

    assert "checkpoint: generation 4 is overdue since " in text.stdout, text.stdout
    assert "run sriov-node rollback --if-uncommitted 4 to restore generation 3" in text.stdout
    assert "unless sriov-node commit runs" not in text.stdout
    assert body["checkpoint"]["overdue"] is True and body["checkpoint"]["generation"] == 4
    assert body["converged"] is True and body["config_differs"] is False  # all else is as it should be ...
    assert cli(host, "status", "--exit-code").returncode == 1  # ... but a rollback is due
    line = [x for x in history.stdout.splitlines() if x.lstrip("* ").startswith("4 ")][0]
    assert "checkpoint overdue since " in line and "rollback --if-uncommitted 4" in line, history.stdout
    assert "pending until" not in line
    assert cli(host, "rollback", "--if-uncommitted", "4").returncode == 0
    assert cli(host, "status", "--exit-code").returncode == 0
