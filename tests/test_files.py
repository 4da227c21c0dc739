"""Every file the agent reads is opened without blocking, must be a regular file, and is read with a cap.

The table: each file the agent reads (the config, state.json, capture's and metrics' outputs)
x what can be put in its place (a FIFO, a character device, a directory, an oversize file, a
symlink where one is refused) x each command that reads it. Every run answers promptly (the
subprocess timeout is only a hang guard) with an error or notice naming the path and what it is,
in the JSON document when --json is given. Then the config's text: a byte-order mark, CRLF line
ends and invalid UTF-8 get one answer from every command.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import List

import pytest

from sriov_node.files import CONFIG_LIMIT, STATE_LIMIT
from tests.helpers import CLI, PF0, PF1, open_host, run_cli

GOOD = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'
HANG_GUARD = 60  # seconds: a run that blocks is killed here and the test fails; no timing is asserted

# ---------------------------------------------------------------------------- what can stand in for a file


def put_fifo(path: Path) -> str:
    os.mkfifo(path)
    return "is a FIFO"


def put_char_device(path: Path) -> str:
    os.symlink("/dev/zero", path)  # the config may be a symlink: what it names is a character device
    return "is a character device"


def put_directory(path: Path) -> str:
    path.mkdir()
    return "is a directory"


def put_oversize(limit: int):
    def put(path: Path) -> str:
        with open(path, "wb") as fh:
            fh.write(b"# padding\n" * (limit // 10 + 1))
        return f"is larger than {limit} bytes"
    return put


CONFIG_KINDS = {"fifo": put_fifo, "char-device": put_char_device, "directory": put_directory,
                "oversize": put_oversize(CONFIG_LIMIT)}

# (command line after --config, answers in JSON, the exit code)
CONFIG_COMMANDS = [
    (["validate", "--json"], True, 2),
    (["validate"], False, 2),
    (["apply", "--json"], True, 2),
    (["apply", "--dry-run"], False, 2),
    (["status", "--json"], True, 2),
    (["set", PF0, "num_vfs=3", "--json"], True, 2),
    (["unset", PF0, "--json"], True, 2),
    (["metrics"], False, 2),
    (["export", "device-plugin", "--json-only"], True, 2),
    (["udev-rule"], False, 2),
    (["check", "--json"], True, 2),
    (["boot", "--wait", "1"], False, 2),
    (["daemon", "--no-notify"], False, 2),
]


def error_text(body) -> str:
    """Everything a JSON answer says, as text (the message may sit in error, notices, ...)."""
    return json.dumps(body)


@pytest.mark.parametrize("kind", sorted(CONFIG_KINDS))
@pytest.mark.parametrize("argv,as_json,code", CONFIG_COMMANDS, ids=[" ".join(c[0]) for c in CONFIG_COMMANDS])
def test_a_config_that_is_not_a_regular_file_is_refused_at_once_by_every_command(
        make_host, tmp_path, kind, argv, as_json, code):
    host = make_host()
    path = tmp_path / "config.toml"
    what = CONFIG_KINDS[kind](path)
    result = run_cli(*argv, root=host.root, config=str(path), timeout=HANG_GUARD)
    assert result.returncode == code, result.stderr
    assert f"{path}: {what}" in result.stderr
    assert "Traceback" not in result.stderr
    if as_json:
        body = json.loads(result.stdout)
        assert f"{path}: {what}" in error_text(body)
    assert open_host(host.root).sysfs.num_vfs(PF0) == 0  # nothing was written


def test_dev_zero_as_the_config_is_refused_without_being_read(tmp_path):
    result = run_cli("validate", "--json", config="/dev/zero", root=str(tmp_path), timeout=HANG_GUARD)
    assert result.returncode == 2
    assert json.loads(result.stdout)["error"]["message"].startswith("/dev/zero: is a character device")


def test_a_config_symlink_to_a_managed_file_is_followed(make_host, tmp_path):
    host = make_host()
    managed = tmp_path / "managed.toml"
    managed.write_text(GOOD)
    link = tmp_path / "config.toml"
    link.symlink_to(managed)
    assert run_cli("apply", root=host.root, config=str(link)).returncode == 0
    edited = run_cli("set", PF0, "num_vfs=3", "--no-apply", root=host.root, config=str(link))
    assert edited.returncode == 0, edited.stderr
    assert link.is_symlink() and "num_vfs = 3" in managed.read_text()  # the managed file was edited


# ---------------------------------------------------------------------------- the daemon's reload


class Daemon:
    def __init__(self, root: str, config: str):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SRIOV_NODE_", "NOTIFY_SOCKET", "JOURNAL_STREAM", "INVOCATION_ID"))}
        self.proc = subprocess.Popen([CLI, "--root", root, "--config", config, "daemon", "--no-notify"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.log: List[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + HANG_GUARD
        while not predicate():
            assert self.proc.poll() is None, f"daemon exited waiting for {what}\n" + "\n".join(self.log)
            assert time.monotonic() < deadline, f"no {what}\n" + "\n".join(self.log)
            time.sleep(0.02)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=HANG_GUARD)
        self.reader.join(timeout=5)
        return code


@pytest.mark.parametrize("kind", sorted(CONFIG_KINDS))
def test_the_daemon_reloading_a_config_that_is_not_a_regular_file_refuses_it_and_keeps_repairing(
        make_host, tmp_path, kind):
    host = make_host(vfio_loaded=True)
    path = tmp_path / "config.toml"
    path.write_text(GOOD + f'[[pf]]\npci = "{PF1}"\nnum_vfs = 2\n')
    daemon = Daemon(host.root, str(path))
    try:
        daemon.wait_for(lambda: daemon.logged("ready"), "ready")
        path.unlink()
        what = CONFIG_KINDS[kind](path)
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(lambda: daemon.logged("is invalid; keeping generation"), "a refused reload")
        assert daemon.logged(f"{path}: {what}")
        h = open_host(host.root)
        h.sysfs.unbind(PF1, "i40e")  # the PF loses its VFs; the old config still rules and repairs it
        h.sysfs.drivers_probe(PF1)
        daemon.wait_for(lambda: open_host(host.root).sysfs.num_vfs(PF1) == 2, "the repair")
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------------------- state.json


def state_file(host) -> Path:
    path = Path(host.root, "var/lib/sriov-node/state.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def put_symlink_to_a_file(path: Path) -> str:
    target = path.parent / "elsewhere.txt"
    target.write_text("precious\n")
    path.symlink_to(target)
    return "is a symbolic link"


def put_symlink_to_a_device(path: Path) -> str:
    os.symlink("/dev/zero", path)
    return "is a symbolic link"


STATE_KINDS = {"fifo": put_fifo, "directory": put_directory, "oversize": put_oversize(STATE_LIMIT),
               "symlink": put_symlink_to_a_file, "symlink-to-device": put_symlink_to_a_device}


@pytest.mark.parametrize("kind", sorted(STATE_KINDS))
def test_state_json_that_is_not_a_regular_file_is_named_by_status_metrics_apply_and_set(make_host, write_config, kind):
    host = make_host()
    config = write_config(GOOD)
    path = state_file(host)
    what = STATE_KINDS[kind](path)
    before = os.lstat(path)

    status = run_cli("status", "--json", root=host.root, config=config, timeout=HANG_GUARD)
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["last_apply"] is None
    assert any(f"{path}: {what}" in n for n in body["notices"]), body["notices"]
    text = run_cli("status", root=host.root, config=config, timeout=HANG_GUARD)
    assert text.returncode == 0 and f"{path}: {what}" in text.stderr

    metrics = run_cli("metrics", root=host.root, config=config, timeout=HANG_GUARD)
    assert metrics.returncode == 0 and f"{path}: {what}" in metrics.stderr
    assert not [line for line in metrics.stdout.splitlines() if line.startswith("sriov_node_last_apply")]

    applied = run_cli("apply", "--json", root=host.root, config=config, timeout=HANG_GUARD)
    assert applied.returncode == 0, applied.stderr  # applied and read back; at worst the record is missing
    body = json.loads(applied.stdout)
    assert body["result"] == "converged" and body["exit_code"] == 0
    assert open_host(host.root).sysfs.num_vfs(PF0) == 2
    if kind == "oversize":  # a regular file: replaced by the new record
        assert body["notices"] == [] and json.loads(path.read_text())["result"] == "converged"
        return
    assert any("not recorded" in n and f"{path}: {what}" in n for n in body["notices"]), body["notices"]

    edited = run_cli("set", PF0, "num_vfs=3", "--json", root=host.root, config=config, timeout=HANG_GUARD)
    assert edited.returncode == 0, edited.stderr
    assert any(f"{path}: {what}" in n for n in json.loads(edited.stdout)["apply"]["notices"])

    after = os.lstat(path)  # nothing replaced what was there, nothing was written through it
    assert (after.st_mode, after.st_ino, after.st_size) == (before.st_mode, before.st_ino, before.st_size)
    if kind == "symlink":
        assert (path.parent / "elsewhere.txt").read_text() == "precious\n"


def test_state_json_as_a_symlink_is_neither_read_nor_overwritten(make_host, write_config, tmp_path):
    host = make_host()
    config = write_config(GOOD)
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    path = state_file(host)
    target = tmp_path / "planted.json"
    target.write_text(path.read_text())  # a valid record: following the link would show it
    path.unlink()
    path.symlink_to(target)
    status = json.loads(run_cli("status", "--json", root=host.root, config=config).stdout)
    assert status["last_apply"] is None
    again = run_cli("set", PF0, "num_vfs=3", root=host.root, config=config)
    assert again.returncode == 0 and "is a symbolic link" in again.stderr
    assert path.is_symlink() and json.loads(target.read_text())["writes"] == 1  # the target is untouched


def test_a_state_json_of_any_other_garbage_is_a_notice(make_host, write_config):
    host = make_host()
    config = write_config(GOOD)
    path = state_file(host)
    for garbage, words in ((b"\xff\xfe", "not valid JSON"), (b"[1, 2]", "not a JSON object")):
        path.write_bytes(garbage)
        body = json.loads(run_cli("status", "--json", root=host.root, config=config).stdout)
        assert any(words in n and str(path) in n for n in body["notices"])


# ---------------------------------------------------------------------------- outputs read back or written


def test_capture_refuses_to_keep_an_oversize_file_as_its_backup(make_host, tmp_path):
    host = make_host()
    out = tmp_path / "big.toml"
    put_oversize(CONFIG_LIMIT)(out)
    size = out.stat().st_size
    result = run_cli("capture", "-o", str(out), root=host.root, timeout=HANG_GUARD)
    assert result.returncode == 1 and f"{out}: is larger than {CONFIG_LIMIT} bytes" in result.stderr
    assert out.stat().st_size == size and not Path(f"{out}.bak").exists()


@pytest.mark.parametrize("argv", [["capture", "-o"], ["metrics", "-o"]], ids=["capture", "metrics"])
def test_an_output_fifo_nobody_reads_is_refused_not_waited_for(make_host, write_config, tmp_path, argv):
    host = make_host()
    out = tmp_path / "out.fifo"
    os.mkfifo(out)
    result = run_cli(*argv, str(out), root=host.root, config=write_config(GOOD), timeout=HANG_GUARD)
    assert result.returncode == 1 and f"cannot write {out}: it is a FIFO that nothing reads" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_output_fifo_with_a_reader_gets_the_text(make_host, write_config, tmp_path):
    host = make_host()
    out = tmp_path / "out.fifo"
    os.mkfifo(out)
    got: List[bytes] = []
    reader = threading.Thread(target=lambda: got.append(open(out, "rb").read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + HANG_GUARD
    while True:  # the reader must be there before the writer opens (else: refused, as above)
        result = run_cli("metrics", "-o", str(out), root=host.root, config=write_config(GOOD), timeout=HANG_GUARD)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
    reader.join(timeout=HANG_GUARD)
    assert result.returncode == 0, result.stderr
    assert b"sriov_node_config_valid 1" in got[0]


# ---------------------------------------------------------------------------- the config's text: BOM, CRLF, bad UTF-8

BOM = b"\xef\xbb\xbf"
COMMENTED = (f'# managed by hand\nversion = 1\n\n[[pf]]\npci = "{PF0}"  # the first port\nnum_vfs = 2\n'
             f'\n[[pf]]\npci = "{PF1}"\nnum_vfs = 1\n').encode()


def forms():
    return {"bom": BOM + COMMENTED, "crlf": COMMENTED.replace(b"\n", b"\r\n"),
            "bom+crlf": BOM + COMMENTED.replace(b"\n", b"\r\n")}


@pytest.mark.parametrize("form", sorted(forms()))
def test_a_bom_or_crlf_config_is_read_alike_by_every_command_and_set_keeps_its_form(make_host, tmp_path, form):
    host = make_host()
    path = tmp_path / "config.toml"
    data = forms()[form]
    path.write_bytes(data)
    valid = run_cli("validate", "--json", root=host.root, config=str(path))
    assert valid.returncode == 0 and json.loads(valid.stdout)["valid"] is True, valid.stdout + valid.stderr
    assert run_cli("apply", root=host.root, config=str(path)).returncode == 0
    status = json.loads(run_cli("status", "--json", root=host.root, config=str(path)).stdout)
    assert status["converged"] is True and "error" not in status

    edited = run_cli("set", PF0, "num_vfs=3", "--json", root=host.root, config=str(path))
    assert edited.returncode == 0, edited.stdout + edited.stderr
    new = path.read_bytes()
    assert new == data.replace(b"num_vfs = 2", b"num_vfs = 3")  # byte for byte but the one value
    assert Path(f"{path}.bak").read_bytes() == data
    assert open_host(host.root).sysfs.num_vfs(PF0) == 3

    removed = run_cli("unset", PF1, root=host.root, config=str(path))
    assert removed.returncode == 0, removed.stderr
    left = path.read_bytes()
    assert left.startswith(BOM) == data.startswith(BOM)
    if b"\r\n" in data:
        assert b"\n" not in left.replace(b"\r\n", b"")  # every line end still CRLF
    else:
        assert b"\r" not in left
    assert PF1.encode() not in left and b"# the first port" in left
    assert run_cli("validate", root=host.root, config=str(path)).returncode == 0

    captured = run_cli("capture", "-o", str(path), root=host.root)
    assert captured.returncode == 0, captured.stderr
    assert Path(f"{path}.bak").read_bytes() == left  # the previous version, byte for byte
    assert run_cli("apply", root=host.root, config=str(path)).stdout.count("unchanged") >= 1


def test_a_config_with_mixed_line_ends_is_refused_by_set_and_left_alone(make_host, tmp_path):
    host = make_host()
    path = tmp_path / "config.toml"
    data = COMMENTED.replace(b"\n", b"\r\n", 2)
    path.write_bytes(data)
    assert run_cli("validate", root=host.root, config=str(path)).returncode == 0
    result = run_cli("set", PF0, "num_vfs=3", root=host.root, config=str(path))
    assert result.returncode == 2 and "mixes Windows (CRLF) and Unix (LF) line ends" in result.stderr
    assert path.read_bytes() == data


BAD_UTF8 = [
    (b'[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2 # caf\xe9\n', 45, 3),  # Latin-1
    (BOM + b'# \xc3\x28\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n', 5, 1),  # a broken sequence after a BOM
    (b"\xff\xfe[\x00[\x00", 0, 1),  # UTF-16
]
TEXT_COMMANDS = [
    (["validate", "--json"], True), (["apply", "--json"], True), (["status", "--json"], True),
    (["set", PF0, "num_vfs=3", "--json"], True), (["unset", PF0, "--json"], True), (["metrics"], False),
    (["check", "--json"], True), (["export", "device-plugin", "--json-only"], True),
]


@pytest.mark.parametrize("data,offset,line", BAD_UTF8, ids=["latin1", "bom-then-broken", "utf16"])
def test_invalid_utf8_is_one_error_naming_the_byte_from_every_command(make_host, tmp_path, data, offset, line):
    host = make_host()
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    expected = f"{path}: not UTF-8 text (byte {offset}, line {line}); save the file as UTF-8"
    assert data[offset:].decode("utf-8", "replace")[0] == "\ufffd"
    for argv, as_json in TEXT_COMMANDS:
        result = run_cli(*argv, root=host.root, config=str(path))
        assert result.returncode == 2, (argv, result.stderr)
        assert f"error: {expected}" in result.stderr.splitlines(), (argv, result.stderr)
        if as_json:
            body = json.loads(result.stdout)
            assert (body.get("error") or {}).get("message") == expected, (argv, body)
    assert path.read_bytes() == data and not Path(f"{path}.bak").exists()


def test_not_toml_is_the_same_error_from_validate_and_set(make_host, tmp_path):
    host = make_host()
    path = tmp_path / "config.toml"
    path.write_bytes(BOM + b"[[pf]]\npci = \n")
    answers = set()
    for argv in (["validate"], ["set", PF0, "num_vfs=3"], ["unset", PF0]):
        result = run_cli(*argv, root=host.root, config=str(path))
        assert result.returncode == 2
        answers.add(re.sub(r"^error: ", "", result.stderr.strip().splitlines()[-1]))
    assert len(answers) == 1 and answers.pop().startswith(f"{path}: not valid TOML")


# ---------------------------------------------------------------------------- what `check` reads under the root

HOST_FILES = ["etc/default/grub", "proc/cmdline", "proc/cpuinfo"]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_check_reads_the_hosts_files_without_blocking(make_host, kind):
    host = make_host()
    for rel in HOST_FILES:
        path = Path(host.root, rel)
        if path.exists():
            path.unlink()
        what = CONFIG_KINDS[kind](path)
    result = run_cli("check", "--json", root=host.root, timeout=HANG_GUARD)
    assert "Traceback" not in result.stderr
    body = json.dumps(json.loads(result.stdout))
    assert f"/proc/cmdline cannot be read: {what}" in body, body
    assert f"/etc/default/grub: {what}" in body, body


@pytest.mark.parametrize("attr", ["sriov_totalvfs", "sriov_numvfs", "config", "driver_override"])
def test_a_fifo_among_a_trees_sysfs_files_reads_as_nothing_not_a_hang(make_host, write_config, attr):
    host = make_host()
    device = os.path.realpath(os.path.join(host.root, "sys/bus/pci/devices", PF0))
    os.unlink(os.path.join(device, attr))
    os.mkfifo(os.path.join(device, attr))
    for argv in (["status", "--json"], ["check", "--json"], ["validate", "--json"]):
        result = run_cli(*argv, root=host.root, config=write_config(GOOD), timeout=HANG_GUARD)
        assert "Traceback" not in result.stderr
        assert json.loads(result.stdout)["exit_code"] == result.returncode
