"""Carry out a boot-loader fix under the root prefix: timestamped backups, atomic replaces, the
regeneration tool, and the reboot-required note. Never reboots, never touches firmware."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from sriov_node.errors import describe_os_error
from sriov_node.files import UnsafeFile, check_replaceable, read_regular
from sriov_node.host import Host
from sriov_node.platform import REBOOT_REQUIRED, FileChange, FixPlan

TOOL_TIMEOUT = 300.0
MAX_BOOT_FILE = 1 << 20  # as host/platform.py reads them


@dataclass
class FixOutcome:
    dry_run: bool
    written: List[Tuple[str, Optional[str]]] = field(default_factory=list)  # (file, its backup; None: created)
    commands: List[Dict[str, Any]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    reboot_required: Optional[str] = None

    @property
    def changed(self) -> bool:
        return bool(self.written) or any(c["ran"] and c["exit_code"] == 0 for c in self.commands)


def _full(host: Host, path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return host.path("/".join(parts[:-1]), parts[-1])


def backup_name(full: str, stamp: str) -> str:
    candidate = f"{full}.sriov-node-{stamp}.bak"
    n = 1
    while os.path.lexists(candidate):
        candidate = f"{full}.sriov-node-{stamp}-{n}.bak"
        n += 1
    return candidate


def _read(full: str, *, follow: bool = True) -> bytes:
    """A boot file, read as every file the agent reads: regular only, never waited on, capped."""
    return read_regular(full, limit=MAX_BOOT_FILE, follow=follow)


def _copy(src: str, dst: str) -> None:
    st = os.stat(src)
    data = _read(src)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, st.st_mode & 0o7777)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(full: str, data: bytes, like: Optional[os.stat_result]) -> None:
    """Write `data` to a temporary file beside `full` and rename it over: readers see the old or
    the new file, never half of one; mode and owner follow the file it replaces."""
    directory, name = os.path.split(full)
    tmp = os.path.join(directory, f".{name}.sriov-node.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        if like is not None:
            os.fchmod(fd, like.st_mode & 0o7777)
            try:
                os.fchown(fd, like.st_uid, like.st_gid)
            except PermissionError:
                pass
        else:
            os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, full)
    except OSError:
        os.unlink(tmp)
        raise
    _fsync_dir(directory)


def refuse(host: Host, change: FileChange) -> Optional[str]:
    """Why `change` may not be written (checked for every file before any is): a symbolic link or
    anything but a regular file in its place, a file of our own that appeared since it was read."""
    full = _full(host, change.path)
    if change.own:
        try:
            check_replaceable(full)
        except UnsafeFile as exc:
            return (f"{change.path} {exc.reason.partition(';')[0]}: sriov-node writes only a regular file of its own "
                    "there; remove what stands in its place and run sriov-node check --fix again")
        if change.created and os.path.lexists(full):
            return f"{change.path} appeared while sriov-node was reading; run sriov-node check --fix again"
        return None
    if os.path.islink(full):
        return f"{change.path} is a symbolic link; edit the file it points to ({os.readlink(full)})"
    try:
        check_replaceable(full)
    except UnsafeFile as exc:
        return f"{change.path} {exc.reason}"
    return None


def replace_file(host: Host, path: str, old: str, new: str, stamp: str) -> str:
    """Back `path` up, then replace it atomically. Refuses a symbolic link and a file that changed
    since it was read. Returns the backup's path as the machine sees it."""
    full = _full(host, path)
    if os.path.islink(full):
        raise OSError(f"{path} is a symbolic link; edit the file it points to ({os.readlink(full)})")
    st = os.stat(full)
    current = _read(full, follow=False).decode("utf-8", errors="replace")
    if current != old:
        raise OSError(f"{path} changed while sriov-node was reading it; run sriov-node check --fix again")
    backup = backup_name(full, stamp)
    _copy(full, backup)
    atomic_write(full, new.encode(), st)
    return path + backup[len(full):]


def create_file(host: Host, path: str, text: str) -> None:
    """A file of sriov-node's own, where there is none (mode 0644, its directory made 0755)."""
    full = _full(host, path)
    os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
    check_replaceable(full)
    if os.path.lexists(full):
        raise OSError(f"{path} appeared while sriov-node was reading; run sriov-node check --fix again")
    atomic_write(full, text.encode(), None)


def _write(host: Host, change: FileChange, stamp: str) -> Optional[str]:
    """Write one change; the backup's path (None for a file of our own created)."""
    if change.created:
        create_file(host, change.path, change.new)
        return None
    return replace_file(host, change.path, change.old, change.new, stamp)


def _run(argv: List[str], timeout: float) -> Tuple[Optional[int], str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return None, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return None, f"did not finish in {timeout:.0f} s"
    except OSError as exc:
        return None, describe_os_error(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()[-4000:]


def write_reboot_required(host: Host, text: str) -> None:
    full = _full(host, REBOOT_REQUIRED)
    os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
    atomic_write(full, (text.rstrip("\n") + "\n").encode(), None)


def apply_fix(host: Host, plan: FixPlan, *, dry_run: bool, timeout: float = TOOL_TIMEOUT,
              verify: Optional[Callable[[FixOutcome], List[str]]] = None) -> FixOutcome:
    """Write the plan's files (each backed up first), run its commands, then `verify` (what the next
    boot now gets, read back: the problems, none when it has the arguments); the reboot is noted
    only when the next boot was read back with them. A blocked plan (a missing tool) writes nothing."""
    outcome = FixOutcome(dry_run, problems=list(plan.problems))
    for cmd in plan.commands:
        entry: Dict[str, Any] = {"command": cmd.display(), "ran": False, "exit_code": None, "output": None,
                                 "why_not": cmd.why_not}
        outcome.commands.append(entry)
    if plan.blocked:
        for entry, cmd in zip(outcome.commands, plan.commands):
            if not cmd.missing:
                entry["why_not"] = "not run: a tool the next boot depends on is missing"
        return outcome
    if dry_run or plan.empty:
        for entry, cmd in zip(outcome.commands, plan.commands):
            if dry_run and cmd.run:
                entry["why_not"] = "--dry-run"
        return outcome
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    refused = [why for why in (refuse(host, change) for change in plan.changes) if why]
    if refused:  # nothing is written when any file may not be
        outcome.problems += [f"{why}; nothing was changed" for why in refused]
    for change in [] if refused else plan.changes:
        try:
            outcome.written.append((change.path, _write(host, change, stamp)))
        except OSError as exc:
            why = describe_os_error(exc) if exc.errno is not None else str(exc)
            outcome.problems.append(f"{change.path}: not changed: {why}")
    failed_write = len(outcome.written) < len(plan.changes)
    for entry, cmd in zip(outcome.commands, plan.commands):
        if not cmd.run or cmd.program is None:
            continue
        if failed_write:
            entry["why_not"] = "not run: a file above could not be written"
            continue
        saved = []
        for path in cmd.backup:
            full = _full(host, path)
            try:
                dest = backup_name(full, stamp)
                _copy(full, dest)
                saved.append(path + dest[len(full):])
            except OSError as exc:
                outcome.problems.append(f"{path}: no backup before {cmd.argv[0]}: {describe_os_error(exc)}")
        entry["backups"] = saved
        code, output = _run([cmd.program, *cmd.argv[1:]], timeout)
        entry.update(ran=True, exit_code=code, output=output or None)
        if code != 0:
            outcome.problems.append(f"{cmd.display()} failed ({'exit ' + str(code) if code is not None else output}): "
                                    f"{output or 'no output'}")
    if verify is not None and (outcome.written or any(c["ran"] for c in outcome.commands)):
        wrong = verify(outcome)
        outcome.problems += wrong
        if wrong:
            return outcome  # the next boot lacks the arguments: no reboot gives them
    if any(c["ran"] and c["exit_code"] != 0 for c in outcome.commands):
        return outcome  # a tool failed: what it left is not claimed as the next boot
    if outcome.changed and plan.reboot:
        text = (f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}: sriov-node check --fix changed the next boot's kernel "
                f"arguments ({plan.summary or ' '.join(plan.needed)}); reboot to use them")
        try:
            write_reboot_required(host, text)
            outcome.reboot_required = text
        except OSError as exc:
            outcome.problems.append(f"{REBOOT_REQUIRED}: {describe_os_error(exc)}")
    return outcome


def restore(host: Host, path: str, backup: str) -> None:
    """Put a backup made by apply_fix back in place (atomically)."""
    full = _full(host, path)
    data = _read(_full(host, backup), follow=False)
    atomic_write(full, data, os.stat(full) if os.path.exists(full) else None)
