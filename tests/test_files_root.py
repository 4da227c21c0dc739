"""The files a root daemon writes, attacked as issue 23 found them, on a simulated root.

The tests run as root (as the agent does), so a path under the test's directory is a root-owned
path on a real file system: a symlink planted in the config's place makes a root writer
overwrite the file it names, exactly as on a node. Each attack: the config's directory made
group/world-writable and the config replaced by a symlink to a root-only file (rollback, a
checkpoint's expiry, `set`); a 0666 config kept 0666; a symlink in place of the agent's own
directories (`var/lib/sriov-node`, `generations/`, `run/sriov-node`); a record whose fields were
edited (its `config_path` redirects rollback's write); temporary files a killed writer left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sriov_node import generations
from sriov_node.config import load_config
from sriov_node.engine.survey import load_desired
from sriov_node.errors import ConfigError
from tests.helpers import PF0, open_host, run_cli

A = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'
B = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 3\n'
SECRET = "root:$6$secret:19000:0:99999:7:::\n"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are on root-owned files: run as root")


@pytest.fixture
def host(make_host):
    return make_host()


@pytest.fixture
def config(host):
    path = Path(host.root) / "etc/sriov-node/config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    return path


@pytest.fixture
def victim(tmp_path):
    """A root-only file outside the config's directory (/etc/shadow on a node)."""
    path = tmp_path / "shadow"
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


def cli(host, *args):
    return run_cli(*args, root=host.root)


def applied(host, config, text, *extra):
    config.write_text(text)
    proc = cli(host, "apply", *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def num_vfs(host) -> int:
    return open_host(host.root).sysfs.num_vfs(PF0)


def plant(config: Path, victim: Path) -> None:
    """What a local user does once the config's directory is writable by everybody."""
    config.parent.chmod(0o777)
    config.unlink()
    config.symlink_to(victim)


# ---------------------------------------------------------------------------- the config's directory


def test_rollback_refuses_a_world_writable_config_directory_and_writes_nothing(host, config, victim):
    applied(host, config, A)
    applied(host, config, B)
    plant(config, victim)
    proc = cli(host, "rollback", "1")
    assert proc.returncode != 0
    directory = str(config.parent)
    assert f"{directory}: the config's directory is writable by group or others (mode 0777)" in proc.stderr
    assert f"chmod go-w {directory}; chown root {directory}" in proc.stderr
    assert victim.read_text() == SECRET and (victim.stat().st_mode & 0o777) == 0o600  # not written through
    assert num_vfs(host) == 3  # nor the host: refused before anything is written
    assert [g.number for g in generations.history(open_host(host.root))] == [1, 2]


def test_a_checkpoint_expiring_unattended_does_not_write_through_a_planted_symlink(host, config, victim):
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "600")
    plant(config, victim)
    # what the transient timer (or the daemon, through generations.expire_checkpoint) runs at the deadline
    proc = cli(host, "rollback", "--if-uncommitted", "2")
    assert proc.returncode != 0 and "the config's directory is writable by group or others" in proc.stderr
    assert victim.read_text() == SECRET
    with pytest.raises(Exception, match="writable by group or others"):
        generations.expire_checkpoint(open_host(host.root), 2)
    assert victim.read_text() == SECRET


def test_set_refuses_a_config_directory_another_user_owns(host, config):
    applied(host, config, A)
    os.chown(config.parent, 1000, 0)
    proc = cli(host, "set", PF0, "num_vfs=3")
    assert proc.returncode != 0
    assert f"{config.parent}: the config's directory is owned by uid 1000, not root" in proc.stderr
    assert config.read_text() == A and num_vfs(host) == 2  # nothing written, neither file nor host


def test_a_symlinked_config_needs_both_directories_trusted(host, config, tmp_path):
    managed_dir = tmp_path / "managed"
    managed_dir.mkdir(mode=0o755)
    managed = managed_dir / "config.toml"
    managed.write_text(A)
    config.symlink_to(managed)
    assert cli(host, "apply").returncode == 0
    managed_dir.chmod(0o775)
    proc = cli(host, "set", PF0, "num_vfs=3")
    assert proc.returncode != 0 and f"{managed_dir}: the config's directory is writable" in proc.stderr
    managed_dir.chmod(0o755)
    proc = cli(host, "set", PF0, "num_vfs=3")
    assert proc.returncode == 0, proc.stderr
    assert config.is_symlink() and "num_vfs = 3" in managed.read_text()  # the link is kept, its file edited


def test_load_and_validate_refuse_the_directory_as_they_refuse_the_file(tmp_path, monkeypatch):
    directory = tmp_path / "etc"
    directory.mkdir()
    path = directory / "config.toml"
    path.write_text(A)
    path.chmod(0o644)
    directory.chmod(0o757)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), enforce_trust=True)
    assert f"{directory}: the config's directory is writable by group or others (mode 0757)" in str(info.value)
    assert f"chmod go-w {directory}; chown root {directory}" in str(info.value)
    assert info.value.exit_code == 2
    assert load_config(str(path)).pfs  # not asked (a simulated root, not root): as before
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ConfigError, match="the config's directory is writable"):
        load_desired(open_host("/"), str(path))  # what validate, apply and the daemon call; reads only
    directory.chmod(0o755)
    os.chown(directory, 1000, 0)
    with pytest.raises(ConfigError, match="owned by uid 1000, not root"):
        load_config(str(path), enforce_trust=True)
    os.chown(directory, 0, 0)
    assert load_config(str(path), enforce_trust=True).pfs


# ---------------------------------------------------------------------------- the config's mode


@pytest.mark.parametrize("how", ["rollback", "set"])
def test_a_group_or_world_writable_config_is_written_0644_and_the_output_says_so(host, config, how):
    applied(host, config, A)
    applied(host, config, B)
    config.chmod(0o666)
    proc = cli(host, "rollback", "1") if how == "rollback" else cli(host, "set", PF0, "num_vfs=5")
    assert proc.returncode == 0, proc.stderr
    assert (config.stat().st_mode & 0o7777) == 0o644
    assert "had mode 0666; written with mode 0644" in proc.stdout + proc.stderr


def test_a_narrower_mode_is_kept(host, config):
    applied(host, config, A)
    applied(host, config, B)
    config.chmod(0o600)
    assert cli(host, "rollback", "1").returncode == 0
    assert (config.stat().st_mode & 0o7777) == 0o600


def test_a_symlink_put_at_the_final_or_the_temporary_name_is_never_followed(tmp_path, victim, monkeypatch):
    from sriov_node.atomic import OutputError, write_config

    directory = tmp_path / "etc"
    directory.mkdir(mode=0o755)
    path = directory / "config.toml"
    path.write_text(A)
    tmp = directory / f".config.toml.{os.getpid()}.0.tmp"  # the first name this writer tries
    tmp.symlink_to(victim)
    assert write_config(str(path), B.encode()) == (None, None)
    assert path.read_text() == B and victim.read_text() == SECRET and tmp.is_symlink()
    # the config turned into a symlink after its path was resolved (resolution is the feature that
    # lets a root-made link name a managed file; anything at the final name afterwards is not followed)
    path.unlink()
    path.symlink_to(victim)
    monkeypatch.setattr(os.path, "realpath", lambda p: os.path.abspath(p))
    with pytest.raises(OutputError, match="is a symbolic link; refused"):
        write_config(str(path), A.encode())
    assert victim.read_text() == SECRET


# ---------------------------------------------------------------------------- the agent's own directories


def _move_to_link(path: Path, elsewhere: Path) -> None:
    shutil.move(str(path), str(elsewhere))
    path.symlink_to(elsewhere)


@pytest.mark.parametrize("which", ["var/lib/sriov-node/generations", "var/lib/sriov-node"])
def test_a_symlink_in_place_of_the_generations_directory_is_refused_for_reads_records_and_pruning(
        host, config, tmp_path, which):
    config.write_text(A + "[history]\nkeep = 1\n")
    assert cli(host, "apply").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    _move_to_link(Path(host.root) / which, elsewhere)
    before = sorted(p.name for p in elsewhere.rglob("*"))
    for args in (("history",), ("rollback",), ("commit",)):
        proc = cli(host, *args)
        assert proc.returncode == 1 and f"{Path(host.root) / which}: is a symbolic link; refused" in proc.stderr, args
    config.write_text(B + "[history]\nkeep = 1\n")
    proc = cli(host, "apply")  # refused before any write: a run that cannot be recorded does not run
    assert proc.returncode == 1 and str(Path(host.root) / which) in proc.stderr
    assert sorted(p.name for p in elsewhere.rglob("*")) == before  # nothing recorded there, nothing pruned


def test_a_symlink_in_place_of_the_state_directory_is_neither_read_nor_written(host, config, tmp_path):
    applied(host, config, A)
    elsewhere = tmp_path / "elsewhere"
    _move_to_link(Path(host.root) / "var/lib/sriov-node", elsewhere)
    state = (elsewhere / "state.json").read_text()
    status = cli(host, "status", "--json")
    assert f"{Path(host.root) / 'var/lib/sriov-node'}: is a symbolic link; refused" in status.stdout
    config.write_text(B)
    proc = cli(host, "apply")
    assert "is a symbolic link; refused" in proc.stderr
    assert (elsewhere / "state.json").read_text() == state


def test_a_symlink_in_place_of_the_run_directory_is_refused(host, config, tmp_path):
    config.write_text(A)
    run = Path(host.root) / "run/sriov-node"
    run.parent.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run.symlink_to(elsewhere)
    proc = cli(host, "apply")
    assert proc.returncode == 1 and f"{run}: is a symbolic link; refused" in proc.stderr
    assert list(elsewhere.iterdir()) == [] and num_vfs(host) == 0


# ---------------------------------------------------------------------------- the record's checksum


def _record(host, number: int) -> Path:
    return Path(generations.directory(open_host(host.root))) / f"{number:08d}.json"


def test_an_edited_config_path_in_a_record_does_not_redirect_rollback(host, config, victim):
    applied(host, config, A)
    applied(host, config, B)
    record = _record(host, 2)
    body = json.loads(record.read_text())
    body["config_path"] = str(victim)  # the config bytes (and their sha256) untouched
    record.write_text(json.dumps(body))
    proc = cli(host, "rollback", "1")
    assert proc.returncode == 1
    assert f"generation record {record} is damaged or was edited" in proc.stderr
    assert victim.read_text() == SECRET and config.read_text() == B and num_vfs(host) == 3


@pytest.mark.parametrize("field,value", [("number", 1), ("restored_from", 1), ("checkpoint", None),
                                         ("config", A)])
def test_every_field_rollback_acts_on_is_covered(host, config, field, value):
    applied(host, config, A)
    applied(host, config, B, "--checkpoint", "600")
    record = _record(host, 2)
    body = json.loads(record.read_text())
    assert body["format"] == 2 and body[field] != value
    body[field] = value
    if field == "config":
        body["sha256"] = generations._sha256(value.encode()).hexdigest()  # the old check would pass
    record.write_text(json.dumps(body))
    proc = cli(host, "history")
    assert proc.returncode == 1 and f"{record} is damaged or was edited" in proc.stderr


def test_records_of_the_first_format_are_still_read_with_their_old_check(host, config):
    applied(host, config, A)
    applied(host, config, B)
    for n in (1, 2):
        record = _record(host, n)
        body = json.loads(record.read_text())
        body.pop("record_sha256")
        body["format"] = 1
        record.write_text(json.dumps(body))
    proc = cli(host, "rollback", "1")
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() == A and json.loads(_record(host, 3).read_text())["format"] == 2
    body = json.loads(_record(host, 1).read_text())
    body["config"] = B  # its sha256 no longer matches: the old check refuses it, as before
    _record(host, 1).write_text(json.dumps(body))
    proc = cli(host, "history")
    assert proc.returncode == 1 and "its number or sha256 does not match" in proc.stderr


# ---------------------------------------------------------------------------- temporary files of killed writers


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_files_a_killed_writer_left_are_removed_by_the_next_writer(host, config):
    applied(host, config, A)
    dead = _dead_pid()
    left = [config.parent / f".config.toml.{dead}.{n}.tmp" for n in range(3)]
    left.append(config.parent / f".config.toml.bak.{dead}.0.tmp")
    for path in left:
        path.write_text("half a config")
    live = config.parent / f".config.toml.{os.getpid()}.0.tmp"  # a writer still running: not its business
    other = config.parent / f".notes.toml.{dead}.0.tmp"  # not the config's pattern
    for path in (live, other):
        path.write_text("x")
    records = Path(generations.directory(open_host(host.root)))
    stale_record = records / f".00000002.json.{dead}.0.tmp"
    stale_record.write_text("{")
    proc = cli(host, "set", PF0, "num_vfs=3")
    assert proc.returncode == 0, proc.stderr
    assert not any(path.exists() for path in left) and not stale_record.exists()
    assert live.exists() and other.exists()


def test_a_sticky_directory_is_trusted_for_a_file_root_owns(tmp_path):
    """/tmp (mode 1777): nobody but its owner may remove or rename root's file there, so a candidate
    config in /tmp is no symlink risk; a file someone else owns there still is."""
    from sriov_node.files import config_directory_problem

    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    mine = sticky / "candidate.toml"
    mine.write_text("version = 1\n")
    assert config_directory_problem(str(mine), (0, os.geteuid())) is None
    os.chown(mine, 4242, 4242)
    assert "writable by group or others" in config_directory_problem(str(mine), (0, os.geteuid()))
    os.chmod(sticky, 0o777)  # not sticky: refused whoever owns the file
    os.chown(mine, 0, 0)
    assert "writable by group or others" in config_directory_problem(str(mine), (0, os.geteuid()))
