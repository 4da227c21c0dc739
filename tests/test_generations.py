"""Applied generations: the store (records, bounds, checkpoints, unsafe files) and the commands on it."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import pytest

from sriov_node import generations
from sriov_node.generations import GenerationError
from sriov_node.engine.state import ApplyLock

CONFIG = b"""version = 1

[[pf]]
name = "ens1f0"
num_vfs = 2
"""


def other(n: int) -> bytes:
    return CONFIG.replace(b"num_vfs = 2", b"num_vfs = %d" % n)


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None))


def rec(host, config=CONFIG, command="apply", **kw):
    kw.setdefault("outcome", "converged")
    kw.setdefault("pfs", {})
    return generations.record(host, config, host.path("etc/sriov-node/config.toml"), command=command, **kw)


# ---------------------------------------------------------------------------- the store


def test_records_are_numbered_read_back_exactly_and_the_newest_is_current(host):
    assert generations.current(host) is None and generations.history(host) == []
    weird = other(3) + b"# caf\xc3\xa9 \r\n"
    first = rec(host, weird, pfs={"0000:20:00.0": {"status": "changed"}})
    second = rec(host, other(4), command="set", outcome="failed")

    assert (first.number, second.number) == (1, 2)
    assert generations.current(host) == second
    again = generations.get(host, 1)
    assert again.config == weird and again.sha256 == hashlib.sha256(weird).hexdigest()
    assert again.pfs == {"0000:20:00.0": {"status": "changed"}} and again.command == "apply"
    assert [g.number for g in generations.history(host)] == [1, 2]
    assert sorted(os.listdir(generations.directory(host))) == ["00000001.json", "00000002.json"]
    with pytest.raises(GenerationError, match="generation 7 does not exist"):
        generations.get(host, 7)


def test_bytes_that_are_not_utf8_are_kept_exactly(host):
    raw = b"\xff\xfe not text"
    assert generations.get(host, rec(host, raw).number).config == raw


def test_the_config_path_is_recorded_with_symlinks_resolved(host, tmp_path):
    real = tmp_path / "real.toml"
    real.write_bytes(CONFIG)
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    gen = generations.record(host, CONFIG, str(link), command="apply", outcome="converged", pfs={})
    assert gen.config_path == str(real)


def test_history_is_bounded_by_history_keep_and_never_drops_the_current_one(host):
    keep3 = other(5) + b"\n[history]\nkeep = 3\n"
    for n in range(1, 8):
        rec(host, other(n))
    assert [g.number for g in generations.history(host)] == list(range1(7))
    rec(host, keep3)
    assert [g.number for g in generations.history(host)] == [6, 7, 8]
    one = other(6) + b"\n[history]\nkeep = 1\n"
    rec(host, one)
    assert [g.number for g in generations.history(host)] == [9]


def range1(n):
    return range(1, n + 1)


def test_the_default_bound_is_20(host):
    for n in range1(23):
        rec(host, other(n % 5 + 1))
    assert [g.number for g in generations.history(host)] == list(range(4, 24))


def test_a_pending_checkpoints_fallback_is_never_pruned(host):
    rec(host, other(1))
    keep1 = other(2) + b"\n[history]\nkeep = 1\n"
    gen = rec(host, keep1, checkpoint_seconds=30)
    assert gen.checkpoint["previous"] == 1 and gen.pending
    assert [g.number for g in generations.history(host)] == [1, 2]


def test_outcomes_outside_the_contract_are_refused(host):
    with pytest.raises(ValueError):
        rec(host, outcome="refused")


# ---------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_pending_until_committed(host):
    rec(host, other(1))
    gen = rec(host, other(2), checkpoint_seconds=60, now=1000.0)
    assert generations.pending_checkpoint(host) == gen
    assert gen.checkpoint == {"deadline": 1060.0, "seconds": 60, "previous": 1, "state": "pending"}

    done = generations.commit(host, now=1059.0)

    assert done.checkpoint["state"] == "committed" and generations.pending_checkpoint(host) is None
    assert generations.get(host, 2).checkpoint["state"] == "committed"
    with pytest.raises(GenerationError, match="no checkpoint pending: generation 2's was committed already"):
        generations.commit(host)  # nothing pending: said, not a silent success (exit 1)


def test_commit_without_a_checkpoint_or_past_its_deadline_says_why(host):
    with pytest.raises(GenerationError, match="no generation applied yet"):
        generations.commit(host)
    rec(host, other(1))
    with pytest.raises(GenerationError, match="generation 1 .apply. is already permanent"):
        generations.commit(host)
    rec(host, other(2), checkpoint_seconds=10, now=1000.0)
    with pytest.raises(GenerationError, match="ran out .* rolled back to generation 1.*rollback --if-uncommitted 2"):
        generations.commit(host, now=1011.0)
    assert generations.pending_checkpoint(host).number == 2


def test_a_checkpoint_needs_a_generation_to_fall_back_to(host):
    with pytest.raises(GenerationError, match="no applied generation to fall back to"):
        rec(host, checkpoint_seconds=10)
    assert generations.history(host) == []


def test_a_new_generation_supersedes_a_pending_checkpoint_and_a_new_checkpoint_keeps_its_fallback(host):
    rec(host, other(1))
    rec(host, other(2), checkpoint_seconds=60)
    third = rec(host, other(3), checkpoint_seconds=60)
    assert third.checkpoint["previous"] == 1  # the pending 2 was never committed
    assert generations.get(host, 2).checkpoint["state"] == "superseded"
    rec(host, other(4))
    assert generations.get(host, 3).checkpoint["state"] == "superseded"
    assert generations.pending_checkpoint(host) is None


def test_desired_of_parses_the_generations_bytes(host):
    gen = rec(host, other(3))
    desired = generations.desired_of(gen, "generation 1")
    assert desired.pfs[0].num_vfs == 3 and desired.source == "generation 1" and desired.raw == other(3)


# ---------------------------------------------------------------------------- unsafe records


def _plant_fifo(path: str) -> None:
    os.mkfifo(path)


def _plant_symlink(path: str) -> None:
    target = path + ".target"
    Path(target).write_text(json.dumps({"number": 2}))
    os.symlink(target, path)


def _plant_directory(path: str) -> None:
    os.mkdir(path)


@pytest.mark.parametrize("plant,words", [(_plant_fifo, "is a FIFO, not a regular file"),
                                         (_plant_symlink, "is a symbolic link; refused"),
                                         (_plant_directory, "is a directory, not a regular file")])
def test_a_record_that_is_not_a_regular_file_is_refused_not_followed_and_nothing_hangs(host, plant, words):
    rec(host, other(1))
    path = os.path.join(generations.directory(host), "00000002.json")
    plant(path)

    for read in (generations.current, generations.history, lambda h: generations.get(h, 2)):
        with pytest.raises(GenerationError, match=f"{path}: {words}"):
            read(host)
    with pytest.raises(GenerationError, match="in the way|is a"):
        rec(host, other(3))  # nor is anything written through it


def test_a_damaged_record_is_refused_with_the_way_out(host):
    rec(host, other(1))
    path = os.path.join(generations.directory(host), "00000001.json")
    body = json.loads(Path(path).read_text())
    body["config"] = body["config"].replace("num_vfs = 1", "num_vfs = 9")  # the bytes no longer match the sha256
    Path(path).write_text(json.dumps(body))
    with pytest.raises(GenerationError, match="damaged .* remove it"):
        generations.current(host)
    Path(path).write_text("{not json")
    with pytest.raises(GenerationError, match="damaged"):
        generations.history(host)


def test_an_oversized_record_is_refused(host):
    rec(host, other(1))
    path = os.path.join(generations.directory(host), "00000001.json")
    with open(path, "ab") as fh:
        fh.truncate((8 << 20) + 10)
    with pytest.raises(GenerationError, match="larger than"):
        generations.current(host)


# ---------------------------------------------------------------------------- the lock


def test_the_apply_lock_is_reentrant_in_a_thread_and_exclusive_between_threads(host):
    from sriov_node.errors import LockTimeout

    seen = []

    def other_thread():
        try:
            with ApplyLock(host, 0.1):
                seen.append("entered")
        except LockTimeout:
            seen.append("waited")

    with ApplyLock(host, 5):
        with ApplyLock(host, 5):  # the engine inside a command that holds the lock
            pass
        t = threading.Thread(target=other_thread)
        t.start()
        t.join(30)  # still held by the outer `with`: the other thread times out
    t = threading.Thread(target=other_thread)
    t.start()
    t.join(30)
    assert seen == ["waited", "entered"]


# ---------------------------------------------------------------------------- who expires a checkpoint


class _RealRootStub:
    """Stands for the real root (is_real_root) with its run/ directory under a temporary one."""

    is_real_root = True
    root = "/"

    def __init__(self, base):
        self.base = str(base)

    def path(self, *parts):
        return os.path.join(self.base, *parts)


def _fake_tool(bindir: Path, name: str, log: Path, rc: int = 0) -> None:
    tool = bindir / name
    tool.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexit {rc}\n')
    tool.chmod(0o755)


def test_without_a_daemon_a_systemd_timer_runs_the_rollback_and_commit_stops_it(tmp_path, monkeypatch):
    bindir, log = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    _fake_tool(bindir, "systemd-run", log)
    _fake_tool(bindir, "systemctl", log)
    monkeypatch.setenv("PATH", str(bindir))
    stub = _RealRootStub(tmp_path)
    gen = generations.Generation(7, "0" * 64, b"", "/etc/sriov-node/config.toml", 1000.0, "apply", "converged", {},
                                 {"deadline": generations.time.time() + 120, "previous": 6, "state": "pending"})

    said = generations.arm_expiry(stub, gen, config="rel/config.toml")

    (call,) = log.read_text().splitlines()
    assert call.startswith("--on-active=12") and "--unit=sriov-node-checkpoint-7" in call
    assert call.endswith(f"-m sriov_node --config {os.path.abspath('rel/config.toml')} rollback --if-uncommitted 7")
    assert said.startswith("timer sriov-node-checkpoint-7.timer restores generation 6 in 12")
    generations.disarm_expiry(stub, gen)
    assert log.read_text().splitlines()[1] == "stop sriov-node-checkpoint-7.timer"


def test_with_a_live_daemon_no_timer_is_armed_and_a_failing_systemd_run_says_what_to_run(tmp_path, monkeypatch):
    bindir, log = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    _fake_tool(bindir, "systemd-run", log, rc=1)
    monkeypatch.setenv("PATH", str(bindir))
    stub = _RealRootStub(tmp_path)
    gen = generations.Generation(3, "0" * 64, b"", "/x", 1000.0, "apply", "converged", {},
                                 {"deadline": generations.time.time() + 60, "previous": 2, "state": "pending"})
    (tmp_path / "run/sriov-node").mkdir(parents=True)
    (tmp_path / "run/sriov-node/agent.pid").write_text(f"{os.getpid()}\n")

    assert generations.arm_expiry(stub, gen) == f"the agent daemon (pid {os.getpid()}) restores generation 2 at " \
                                                "the deadline"
    assert not log.exists()
    (tmp_path / "run/sriov-node/agent.pid").write_text("999999999\n")  # a daemon that is gone
    said = generations.arm_expiry(stub, gen)
    assert said.startswith("systemd-run failed") and "sriov-node rollback --if-uncommitted 3" in said
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert generations.arm_expiry(stub, gen).startswith("no systemd-run here: run sriov-node rollback "
                                                        "--if-uncommitted 3")
