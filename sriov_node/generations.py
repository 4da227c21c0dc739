"""Applied generations: the desired state the node converges to, and its history.

Every command that converged the host toward a config (apply, set, unset, boot, reload, rollback,
an expired checkpoint) records a generation after its run, under the apply lock: the config's
exact bytes, their sha256, the real path they were read from, the time, the command, the outcome
and each PF's result. The newest generation is the *current* one: what `status` compares the host
with and what the daemon repairs toward. An edited file is not desired state until it is applied.

    <root>/var/lib/sriov-node/generations/00000001.json, 00000002.json, ...

Records are written atomically (write, fsync, rename, fsync the directory) and read with
`files.read_regular(follow=False)`, all through the directory's fd (`files.open_own_directory`):
a symlink or a FIFO planted in a record's place, or a symlink in the place of `generations/` or
`var/lib/sriov-node`, is refused by name, never followed. Each record (FORMAT 2) carries
`record_sha256`, the sha256 of the whole record (config bytes, config_path, number,
restored_from, checkpoint, ...) without that field: an edited record is refused by name.
Records of FORMAT 1 are still read, with their own check (number and the config's sha256). History is append-only (a rollback records a new generation holding the old bytes) and
bounded: the oldest beyond `[history] keep` (default 20) are removed, never the current one nor
the generation a pending checkpoint falls back to.

A checkpoint (`apply --checkpoint S`) is a generation with `checkpoint = {"deadline": wall clock,
"previous": N, "state": "pending"}`; `commit` marks it "committed"; past its deadline (the daemon's
timer, a `systemd-run` timer running `rollback --if-uncommitted N`, or the next `boot`) generation
N's previous config is restored and recorded anew, and the checkpoint is marked "expired".
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional

from sriov_node.engine.outcome import CONVERGED, RECORDED, recorded
from sriov_node.errors import StateError, describe_os_error
from sriov_node.host import Host
from sriov_node.model import _sha256  # CPython's own: hashlib loads OpenSSL on every start

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.model import DesiredState
    from sriov_node.engine.reconcile import Report
    from sriov_node.engine.survey import Only

GENERATIONS_DIR = "var/lib/sriov-node/generations"
_NAME_RE = re.compile(r"^(\d{8,})\.json\Z")
FORMAT = 2  # 1: `sha256` covers the config bytes only; 2: `record_sha256` covers the whole record

# Generation.outcome: converged, failed or interrupted (engine/outcome.py RECORDED)
# Generation.checkpoint["state"]
PENDING, COMMITTED, EXPIRED, SUPERSEDED, KEPT = "pending", "committed", "expired", "superseded", "kept"


class GenerationError(StateError):
    """A generation that does not exist, a record that cannot be read or written, nothing to commit."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Generation:
    """One applied generation: the config bytes a command ran, its outcome per PF, and the values it took over
    or must still put back."""

    number: int
    sha256: str  # of config bytes
    config: bytes = field(repr=False)  # the config file's exact bytes
    config_path: str  # the real path (symlinks resolved) it was read from
    time: float  # wall clock (time.time())
    command: str  # "apply" | "set" | "unset" | "boot" | "reload" | "rollback" | "checkpoint-expired" ...
    outcome: str  # "converged" | "failed" | "interrupted"
    pfs: Dict[str, Dict[str, Any]]  # per-PF result, as state.json's "pfs"
    checkpoint: Optional[Dict[str, Any]] = None  # {"deadline", "previous", "state"}
    restored_from: Optional[int] = None  # the generation whose config a rollback (or expiry) restored
    # what each value this generation manages was before sriov-node first took it over, per PF
    # (engine/preimages.py): a change that stops managing one puts it back
    preimages: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # values this generation must still put back (no block manages them; a restore that did not read
    # back, or a PF that was not here): part of its desired state until a run reads them back
    restores: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return bool(self.checkpoint) and self.checkpoint.get("state") == PENDING

    def describe_time(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))

    def to_dict(self, *, config: bool = True, sealed: bool = False) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "format": FORMAT,
            "number": self.number,
            "sha256": self.sha256,
            "config_path": self.config_path,
            "time": self.time,
            "command": self.command,
            "outcome": self.outcome,
            "pfs": self.pfs,
            "checkpoint": self.checkpoint,
            "restored_from": self.restored_from,
            "preimages": self.preimages,
            "restores": self.restores,
        }
        if config:
            try:
                body["config"] = self.config.decode("utf-8")
            except UnicodeDecodeError:  # kept exact all the same
                body["config_base64"] = base64.b64encode(self.config).decode("ascii")
            if sealed:  # the record as written: its checksum covers every field, the config included
                body["record_sha256"] = _record_sha256(json.loads(json.dumps(body)))
        return body


def _record_sha256(body: Dict[str, Any]) -> str:
    """The sha256 of a record's fields (all but `record_sha256`), as canonical JSON."""
    fields = {k: v for k, v in body.items() if k != "record_sha256"}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return _sha256(text.encode("ascii")).hexdigest()


def directory(host: Host) -> str:
    return host.path(GENERATIONS_DIR)


def _path(host: Host, number: int) -> str:
    return os.path.join(directory(host), f"{number:08d}.json")


def _open_directory(host: Host, *, create: bool = False) -> Optional[int]:
    """An fd on the generations directory, `var/lib/sriov-node` and `generations/` each refused when it
    is a symlink or not a directory (never followed); None when it does not exist (and not `create`)."""
    from sriov_node.files import UnsafeFile, open_own_directory

    try:  # var/lib is the system's; sriov-node/generations are the agent's own
        return open_own_directory(host.path("var/lib"), "sriov-node", "generations", create=create)
    except FileNotFoundError:
        if create:
            raise GenerationError(f"cannot create the generations directory {directory(host)}: a directory on "
                                  "the path does not exist")
        return None
    except UnsafeFile as exc:
        raise GenerationError(f"the generations directory: {exc}")
    except OSError as exc:
        verb = "create" if create else "open"
        raise GenerationError(f"cannot {verb} the generations directory {directory(host)}: {describe_os_error(exc)}")


def _numbers(host: Host) -> List[int]:
    fd = _open_directory(host)
    if fd is None:
        return []
    try:
        names = os.listdir(fd)
    except OSError as exc:
        raise GenerationError(f"cannot list the generations in {directory(host)}: {describe_os_error(exc)}")
    finally:
        os.close(fd)
    return sorted(int(m.group(1)) for m in map(_NAME_RE.match, names) if m)


def _load(host: Host, number: int) -> Generation:
    from sriov_node.files import STATE_LIMIT, UnsafeFile, read_regular

    path = _path(host, number)
    fd = _open_directory(host)
    if fd is None:
        raise GenerationError(f"generation {number} does not exist; see sriov-node history")
    try:
        data = read_regular(path, limit=STATE_LIMIT, follow=False, dir_fd=fd)
    except FileNotFoundError:
        raise GenerationError(f"generation {number} does not exist; see sriov-node history")
    except UnsafeFile as exc:
        raise GenerationError(f"generation record {exc}")
    except OSError as exc:
        raise GenerationError(f"cannot read generation record {path}: {describe_os_error(exc)}")
    finally:
        os.close(fd)
    try:
        body = json.loads(data.decode("utf-8"))
        fmt = body.get("format", 1)
        if fmt not in (1, FORMAT):
            raise GenerationError(f"generation record {path} has format {fmt!r}, which this sriov-node does not "
                                  "know (written by a newer version?); upgrade sriov-node, or remove the record")
        if fmt != 1 and body.get("record_sha256") != _record_sha256(body):
            raise GenerationError(f"generation record {path} is damaged or was edited (its record_sha256 does not "
                                  "match its fields: config, config_path, number, restored_from, checkpoint, ...); "
                                  "remove it or restore it from a backup")
        if "config_base64" in body:
            config = base64.b64decode(body["config_base64"].encode("ascii"), validate=True)
        else:
            config = body["config"].encode("utf-8")
        gen = Generation(
            number=int(body["number"]), sha256=str(body["sha256"]), config=config,
            config_path=str(body["config_path"]), time=float(body["time"]), command=str(body["command"]),
            outcome=str(body["outcome"]), pfs=dict(body.get("pfs") or {}), checkpoint=body.get("checkpoint"),
            restored_from=body.get("restored_from"), preimages=dict(body.get("preimages") or {}),
            restores=dict(body.get("restores") or {}),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GenerationError(f"generation record {path} is damaged ({exc}); remove it or restore it from a backup")
    if gen.number != number or _sha256(gen.config).hexdigest() != gen.sha256:
        raise GenerationError(f"generation record {path} is damaged (its number or sha256 does not match); "
                              "remove it or restore it from a backup")
    return gen


def get(host: Host, number: int) -> Generation:
    """Generation `number`; GenerationError if it is absent (pruned, never made) or unreadable."""
    return _load(host, number)


def history(host: Host) -> List[Generation]:
    """Every kept generation, oldest first."""
    return [_load(host, n) for n in _numbers(host)]


def current(host: Host) -> Optional[Generation]:
    """What the node converges to: the newest generation (None before the first apply)."""
    numbers = _numbers(host)
    return _load(host, numbers[-1]) if numbers else None


def pending_checkpoint(host: Host) -> Optional[Generation]:
    """The current generation if it is an uncommitted checkpoint (with a deadline), else None."""
    gen = current(host)
    return gen if gen is not None and gen.pending else None


def desired_of(gen: Generation, source: Optional[str] = None) -> "DesiredState":
    """The desired state a generation holds (parsed again from its bytes; `source` names it in messages)."""
    from sriov_node.config import parse_config

    return parse_config(gen.config, source or gen.config_path)


def pfs_of(report: "Report") -> Dict[str, Dict[str, Any]]:
    """Each PF's result in a run, as state.json keeps it."""
    return {o.pci: {"name": o.name, "block": o.key, "status": o.status, "error": o.error,
                    "findings": [f["text"] if isinstance(f, dict) else str(f) for f in o.findings]}
            for o in report.outcomes if o.pci is not None}


def _write(host: Host, gen: Generation, *, replace: bool) -> None:
    from sriov_node.atomic import OutputError, replace_at

    fd = _open_directory(host, create=True)
    assert fd is not None
    try:
        path = _path(host, gen.number)
        name = os.path.basename(path)
        try:
            here = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        except OSError as exc:
            raise GenerationError(f"cannot record generation {gen.number}: {path}: {describe_os_error(exc)}")
        if here is not None and (not replace or not stat.S_ISREG(here.st_mode)):
            # a new record's name must be free; a record is replaced only by a record, never through a symlink
            raise GenerationError(f"generation record {path} is in the way (a symlink or a stray file); remove it")
        data = (json.dumps(gen.to_dict(sealed=True), indent=2, sort_keys=True) + "\n").encode()
        try:
            replace_at(fd, path, data, mode=0o644)
        except OutputError as exc:
            raise GenerationError(f"cannot record generation {gen.number}: {exc}")
    finally:
        os.close(fd)


def _replace(gen: Generation, **changes: Any) -> Generation:
    body = dict(gen.__dict__)
    body.update(changes)
    return Generation(**body)


def record(host: Host, config: bytes, config_path: str, *, command: str, outcome: str,
           pfs: Dict[str, Dict[str, Any]], checkpoint_seconds: Optional[float] = None,
           restored_from: Optional[int] = None, now: Optional[float] = None,
           ends_checkpoint: str = SUPERSEDED, preimages: Optional[Dict[str, Dict[str, Any]]] = None,
           restores: Optional[Dict[str, Dict[str, Any]]] = None) -> Generation:
    """Append a generation (call it under the ApplyLock, after a run that wrote toward `config`).

    With `checkpoint_seconds`, the generation is a pending checkpoint falling back to the current
    one (GenerationError if there is none). A pending checkpoint that a new generation replaces
    gets the state `ends_checkpoint`: "superseded" (a later apply or set: the new generation is the
    desired state), "expired" (its deadline restored the previous one), "rolled-back".
    """
    if outcome not in RECORDED:
        raise ValueError(f"a generation's outcome is converged, failed or interrupted, not {outcome!r}")
    now = time.time() if now is None else now
    numbers = _numbers(host)
    previous = _load(host, numbers[-1]) if numbers else None
    checkpoint = None
    if checkpoint_seconds is not None:
        if previous is None:
            raise GenerationError("no applied generation to fall back to: run sriov-node apply (without "
                                  "--checkpoint) first")
        fallback = previous.checkpoint["previous"] if previous.pending else previous.number
        checkpoint = {"deadline": round(now + checkpoint_seconds, 3), "seconds": checkpoint_seconds,
                      "previous": fallback, "state": PENDING}
    gen = Generation(
        number=(numbers[-1] + 1) if numbers else 1,
        sha256=_sha256(config).hexdigest(),
        config=bytes(config),
        config_path=os.path.realpath(config_path),
        time=round(now, 3),
        command=command,
        outcome=outcome,
        pfs=pfs,
        checkpoint=checkpoint,
        restored_from=restored_from,
        preimages=dict(preimages or {}),
        restores=dict(restores or {}),
    )
    _write(host, gen, replace=False)
    if previous is not None and previous.pending:  # after the new record: never a checkpoint lost without one
        _write(host, _replace(previous, checkpoint=dict(previous.checkpoint, state=ends_checkpoint, by=gen.number)),
               replace=True)
    _prune(host, gen)
    return gen


def _prune(host: Host, newest: Generation) -> None:
    from sriov_node.config import history_keep

    keep = history_keep(newest.config)
    numbers = _numbers(host)
    protected = {newest.number}
    if newest.checkpoint and newest.pending:
        protected.add(newest.checkpoint["previous"])
    excess = len(numbers) - keep
    if excess <= 0:
        return
    fd = _open_directory(host)
    if fd is None:
        return
    try:
        for n in numbers:
            if excess <= 0:
                break
            if n in protected:
                continue
            try:
                os.unlink(os.path.basename(_path(host, n)), dir_fd=fd)  # through the directory's fd: never a link
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise GenerationError(f"cannot remove the old generation record {_path(host, n)}: "
                                      f"{describe_os_error(exc)}")
            excess -= 1
    finally:
        os.close(fd)


def commit(host: Host, *, now: Optional[float] = None) -> Generation:
    """Make the pending checkpoint permanent (call it under the ApplyLock). GenerationError if there is
    none, or if its deadline has passed (it is due to be rolled back: say so rather than race it)."""
    gens = history(host)
    gen = gens[-1] if gens else None
    if gen is None or not gen.checkpoint:
        last = gens[-2] if len(gens) > 1 else None  # the checkpoint the current generation ended
        if last is not None and last.checkpoint and last.checkpoint.get("state") in (EXPIRED, ROLLED_BACK):
            raise GenerationError(f"generation {last.number}'s checkpoint {last.checkpoint['state']}: its previous "
                                  f"generation was restored (now generation {gen.number}); apply the change again")
        raise GenerationError("no checkpoint to commit: " + (
            f"the current generation {gen.number} ({gen.command}) is already permanent" if gen
            else "no generation applied yet (sriov-node apply --checkpoint S makes one)"))
    state = gen.checkpoint.get("state")
    if state == COMMITTED:
        raise GenerationError(f"no checkpoint pending: generation {gen.number}'s was committed already")
    if state != PENDING:
        raise GenerationError(f"generation {gen.number}'s checkpoint is {state}; nothing to commit")
    now = time.time() if now is None else now
    deadline = float(gen.checkpoint["deadline"])
    if now > deadline:
        raise GenerationError(
            f"generation {gen.number}'s checkpoint ran out at {time.strftime('%H:%M:%S', time.localtime(deadline))}; "
            f"it is due to be rolled back to generation {gen.checkpoint['previous']}. Run "
            f"sriov-node rollback --if-uncommitted {gen.number} to do it now, or sriov-node apply to apply "
            "the file again")
    committed = _replace(gen, checkpoint=dict(gen.checkpoint, state=COMMITTED, committed=round(now, 3)))
    _write(host, committed, replace=True)
    return committed


def mark_checkpoint(host: Host, gen: Generation, state: str, **extra: Any) -> Generation:
    """Set a checkpoint's state ("expired", "kept", ...) in its record."""
    changed = _replace(gen, checkpoint=dict(gen.checkpoint or {}, state=state, **extra))
    _write(host, changed, replace=True)
    return changed


# ---------------------------------------------------------------------------- the one write path


ROLLED_BACK = "rolled-back"
AGENT_PID = ("run/sriov-node", "agent.pid")
RECORD_MARGIN = 64 * 1024  # what a record needs beyond its config's bytes (each PF's result, pre-images)
UNAPPLIED = ".unapplied-"  # <config>.unapplied-YYYYmmdd-HHMMSS: an edit that was never applied, kept


def outcome_of(report: "Report") -> Optional[str]:
    """The outcome a run records, or None when it must record nothing (a dry run; refused before writing)."""
    return None if report.dry_run else recorded(report.result, report.writes)


def reruns(now: Optional[Generation], desired: "DesiredState", outcome: str, writes: int) -> bool:
    """A run of exactly the current generation's bytes and path, which is no checkpoint, that either
    converged again (as the generation had) or wrote nothing (a PF gone, a run refused again): nothing
    new to record. History holds changes of the desired state, not each re-run: a failing run repeated
    must not push the generations a rollback goes back to out of it (`_prune`). `rerun` records it."""
    return (now is not None and (not now.checkpoint or now.checkpoint.get("state") == COMMITTED)
            and ((outcome == CONVERGED and now.outcome == CONVERGED) or writes == 0)
            and now.sha256 == desired.digest and now.config_path == os.path.realpath(desired.source))


def rerun(host: Host, now: Generation, outcome: str, pfs: Dict[str, Dict[str, Any]],
          preimages: Optional[Dict[str, Dict[str, Any]]] = None,
          restores: Optional[Dict[str, Dict[str, Any]]] = None) -> Generation:
    """A re-run of the current generation (`reruns`), recorded in its own record: its outcome and PFs
    when the re-run came to another outcome, its pre-images and put-backs when they changed."""
    changes: Dict[str, Any] = {}
    if outcome != now.outcome:
        changes.update(outcome=outcome, pfs=pfs)
    if preimages is not None and (preimages, restores) != (now.preimages, now.restores):
        changes.update(preimages=preimages, restores=restores)
    if not changes:
        return now
    now = _replace(now, **changes)
    _write(host, now, replace=True)
    return now


def undo_values(now: Optional[Generation], desired: "DesiredState") -> Dict[str, Dict[str, Any]]:
    """What a run toward `desired` puts back where no block manages it any more: what the applied
    generation `now` still has to put back and, when `desired` is another config than `now`'s, the
    pre-images of everything `now` manages (engine/preimages.py keeps what `desired` manages)."""
    from sriov_node.engine.preimages import merge

    if now is None:
        return {}
    if now.sha256 == desired.digest:
        return merge(now.restores)
    return merge(now.restores, now.preimages)


def check_room(folder: str, size: int, what: str) -> None:
    """`size` bytes can be written in `folder` (made if missing): OSError's reason as a GenerationError
    naming `what` otherwise (a full or read-only file system, a directory that is not one). A test
    write, fsynced and removed: called before the host is touched, so that what must be written after
    the run (a record, the config and its backup) is not refused once the host has changed."""
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
        probe = os.path.join(folder, f".probe.{os.getpid()}.tmp")
        try:
            os.unlink(probe)  # left by a killed run of the same pid
        except FileNotFoundError:
            pass
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            chunk = b"\0" * 65536
            left = size
            while left > 0:
                left -= os.write(fd, chunk[:left])
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise GenerationError(f"cannot write {what} in {folder}: {describe_os_error(exc)}; nothing was written "
                              "to the host: make room there (or fix it), then run the command again")


def check_recordable(host: Host, size: int) -> None:
    """A record of `size` bytes can be written in the generations directory (see check_room)."""
    check_room(directory(host), size, "a generation record")


@contextmanager
def locked(host: Host, timeout: float, cancelled: Callable[[], bool] = _never) -> Iterator[Optional[Generation]]:
    """The apply lock, and the applied generation read under it (None before the first apply). Every
    command that converges the host reads its desired state inside this: nothing is read before the
    lock is had. A damaged newest record is a GenerationError: nothing is converged on a guess."""
    from sriov_node.engine.state import ApplyLock

    host.check_writable()
    with ApplyLock(host, timeout, cancelled):
        yield current(host)


class Change:
    """The one write path: a run toward `desired` from the applied generation `now`, and its record.

        with generations.locked(host, timeout) as now:       # lock, then the newest generation
            desired = <read the file, or a generation>        # inside the lock
            change = Change(host, desired, now, command="apply")
            report = change.run()                             # reconcile; what `now` set and
                                                              # `desired` leaves puts back
            gen = change.record()                             # pre-images carried, or None

    `apply`, `boot`, the daemon, `set`/`unset`, `rollback` and checkpoint expiry all go through it.
    Before its first write a run checks that its record can be written (a full disk refuses the run,
    nothing written); a record that still cannot be written fails the run (`Report.unrecorded`,
    exit 1). Several runs (boot's, one per PF as it comes) make one record.
    """

    def __init__(self, host: Host, desired: "DesiredState", now: Optional[Generation], *, command: str,
                 record: bool = True, checkpoint_seconds: Optional[float] = None,
                 restored_from: Optional[int] = None, ends_checkpoint: str = SUPERSEDED, force: bool = False,
                 timeout: float = 60.0, cancelled: Callable[[], bool] = _never,
                 progress: Optional[Callable[..., None]] = None):
        self.host = host
        self.desired = desired
        self.now = now
        self.command = command
        self.recording = record
        self.checkpoint_seconds = checkpoint_seconds
        self.restored_from = restored_from
        self.ends_checkpoint = ends_checkpoint
        self.force = force
        self.timeout = timeout
        self.cancelled = cancelled
        self.progress = progress
        self.restore = undo_values(now, desired)
        self.reports: List["Report"] = []

    def _check(self) -> None:
        check_recordable(self.host, len(self.desired.raw) + RECORD_MARGIN)

    def run(self, only: "Only" = None, *, dry_run: bool = False) -> "Report":
        from sriov_node.engine.reconcile import reconcile

        report = reconcile(self.host, self.desired, only=only, dry_run=dry_run, force=self.force,
                           timeout=self.timeout, cancelled=self.cancelled, progress=self.progress,
                           restore=self.restore or None, restore_all=not self.reports,
                           before_writes=self._check if self.recording else None)
        if not dry_run and (report.outcomes or not callable(only)):  # a look that picked no PF is no run
            self.reports.append(report)
        return report

    def _specs(self) -> Dict[str, Any]:
        specs: Dict[str, Any] = {}
        for r in self.reports:
            specs.update(r.specs)
        return specs

    def preimages(self) -> Dict[str, Dict[str, Any]]:
        """The new generation's pre-images (engine/preimages.carry)."""
        from sriov_node.engine.preimages import carry, merge

        found: Dict[str, Dict[str, Any]] = {}
        put_back = set()
        for r in self.reports:
            found.update(r.found)
            put_back |= set(r.restoring)
        specs = self._specs()
        # what the applied generation still had to put back is as much a pre-image as its own: a
        # key this change takes over again keeps the value from before sriov-node ever set it
        older = merge(self.now.preimages, self.now.restores) if self.now else {}
        old = {pci: e for pci, e in older.items() if pci in specs or pci not in put_back}
        return carry(old, found, specs)

    def restores(self) -> Dict[str, Dict[str, Any]]:
        """What the new generation must still put back: what this change put back and did not read
        back, and what its predecessor still had to put back on PFs this change did not reach."""
        from sriov_node.engine.preimages import _managed_keys, keys_of, pick

        done: Dict[str, set] = {}  # PF -> the keys put back and read back
        for r in self.reports:
            for pci, entry in r.restored().items():
                done.setdefault(pci, set()).update(keys_of(entry))
        specs = self._specs()
        pending = self.now.restores if self.now else {}
        tried = set().union(*(set(r.restoring) | set(r.waiting) for r in self.reports)) if self.reports else set()
        out: Dict[str, Dict[str, Any]] = {}
        for pci, entry in self.restore.items():
            keys = keys_of(entry) - done.get(pci, set())
            if pci in specs:
                keys -= _managed_keys(specs[pci])
                if keys and pci in tried:
                    out[pci] = pick(entry, keys)
            elif keys and (pci in tried or pci in pending):
                out[pci] = pick(entry, keys)
        return out

    def record(self, *, outcome: Optional[str] = None,
               pfs: Optional[Dict[str, Dict[str, Any]]] = None) -> Optional[Generation]:
        """Record the change (under the lock, after its runs); None when it records nothing: a dry run,
        a run refused before it wrote, a record that could not be written (the last report says why).
        A converged re-run of the current generation's exact config adds nothing (its pre-images are
        completed in place when the run took over a value it had not seen, a PF that came)."""
        if not self.recording or not self.reports:
            return None
        last = self.reports[-1]
        writes = sum(r.writes for r in self.reports)
        if any(r.unrecorded for r in self.reports):
            return None  # stopped before the first write: nothing moved toward this config
        if outcome is None:
            from sriov_node.engine.outcome import verdict

            result = verdict((o.status for r in self.reports for o in r.outcomes),
                             interrupted=any(r.interrupted for r in self.reports))
            outcome = recorded(result, writes)
        if outcome is None:
            return None
        if pfs is None:
            pfs = {}
            for r in self.reports:
                pfs.update(pfs_of(r))
        preimages, restores = self.preimages(), self.restores()
        try:
            now = current(self.host)
            same = self.restored_from is None or (now is not None and now.sha256 == self.desired.digest)
            if self.checkpoint_seconds is None and same and reruns(now, self.desired, outcome, writes):
                assert now is not None
                return rerun(self.host, now, outcome, pfs, preimages, restores)
            return record(self.host, self.desired.raw, self.desired.source, command=self.command, outcome=outcome,
                          pfs=pfs, checkpoint_seconds=self.checkpoint_seconds, restored_from=self.restored_from,
                          ends_checkpoint=self.ends_checkpoint, preimages=preimages, restores=restores)
        except GenerationError as exc:
            last.unrecorded = (f"the run was not recorded as a generation: {exc}; the host follows the last "
                               "recorded generation again at the daemon's next run: fix it, then run the "
                               "command again")
            last.notices.append(last.unrecorded)
            return None


def record_report(host: Host, desired: "DesiredState", report: "Report", *, command: str,
                  checkpoint_seconds: Optional[float] = None, restored_from: Optional[int] = None,
                  ends_checkpoint: str = SUPERSEDED, now: Optional[Generation] = None) -> Optional[Generation]:
    """Record a run made without a Change (its pre-images as a Change would carry them)."""
    change = Change(host, desired, now if now is not None else current(host), command=command,
                    checkpoint_seconds=checkpoint_seconds, restored_from=restored_from,
                    ends_checkpoint=ends_checkpoint)
    change.reports.append(report)
    return change.record()


@dataclass
class Restored:
    """What a rollback (or an expired checkpoint) did: the run, the generation it recorded, the file it wrote."""

    report: "Report"
    target: Generation  # the generation whose config was restored
    generation: Optional[Generation] = None  # the new one it recorded (None: refused before writing)
    config_path: Optional[str] = None  # the file that now holds the target's bytes (None: not written)
    saved: Optional[str] = None  # an edit of the file that was never applied, kept under this name
    already: bool = False  # the target's config was the current one: nothing new recorded

    @property
    def exit_code(self) -> int:
        return self.report.exit_code

    @property
    def result(self) -> str:
        return self.report.result

    @property
    def outcomes(self) -> list:
        return self.report.outcomes

    @property
    def notices(self) -> List[str]:
        return self.report.notices

    def to_dict(self) -> Dict[str, Any]:
        body = self.report.to_dict()
        body.update({"restored": self.target.number, "generation": self.generation.number if self.generation else None,
                     "config": self.config_path, "saved_edit": self.saved, "already_current": self.already})
        return body


def rollback_target(host: Host, number: Optional[int] = None) -> Generation:
    """Generation `number`, or the one `rollback` without a number restores: a pending checkpoint's
    fallback, else the newest older generation whose config differs from the current one."""
    if number is not None:
        return get(host, number)
    gens = history(host)
    if not gens:
        raise GenerationError("no generation applied yet: nothing to roll back to")
    now = gens[-1]
    if now.pending:
        return get(host, now.checkpoint["previous"])
    for gen in reversed(gens[:-1]):
        if gen.sha256 != now.sha256:
            return gen
    raise GenerationError(f"no older generation with a different config than generation {now.number} "
                          "(see sriov-node history)")


def save_unapplied(path: str, now: Optional[Generation], replacing: bytes) -> Optional[str]:
    """Before `path` is overwritten with `replacing`: an edit in it that no generation applied is kept
    beside it as <path>.unapplied-YYYYmmdd-HHMMSS (its mode kept); that name, or None (nothing to keep).
    GenerationError when it cannot be kept: then the file must not be overwritten."""
    from sriov_node.atomic import OutputError, write_atomic

    on_disk = _read_quiet(path)
    if on_disk is None or on_disk == replacing or (now is not None and on_disk == now.config):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    keep = f"{os.path.realpath(path)}{UNAPPLIED}{stamp}"
    n = 1
    while os.path.lexists(keep):
        n += 1
        keep = f"{os.path.realpath(path)}{UNAPPLIED}{stamp}.{n}"
    try:
        mode = os.stat(path).st_mode & 0o777
        write_atomic(keep, on_disk, mode=mode)
    except (OSError, OutputError) as exc:
        raise GenerationError(f"{path} holds an edit never applied, and it cannot be kept as {keep} ({exc}); "
                              "nothing was overwritten")
    return keep


def _put_file(path: str, now: Optional[Generation], data: bytes, report: "Report") -> "tuple[Optional[str], Optional[str]]":
    """Write `data` to the config file, an unapplied edit kept first: (the file's real path or None, the
    kept edit's name or None); a failure is a notice of the report (the generation stays the truth)."""
    from sriov_node.atomic import OutputError, write_config

    try:
        saved = save_unapplied(path, now, data)
    except GenerationError as exc:
        report.notices.append(f"{exc}; the daemon and status follow the recorded generation, not the file")
        return None, None
    if saved:
        report.notices.append(f"{path} held an edit that was never applied: kept as {saved}")
    try:
        if _read_quiet(path) != data:
            notice = write_config(path, data)[1]
            if notice:
                report.notices.append(notice)
    except OutputError as exc:
        report.notices.append(f"the host was restored, but {exc}; the daemon and status follow the recorded "
                              "generation, not the file")
        return None, saved
    return os.path.realpath(path), saved


def restore(host: Host, target: Generation, *, command: str = "rollback", config_path: Optional[str] = None,
            force: bool = False, timeout: float = 60.0, cancelled: Callable[[], bool] = _never,
            progress: Optional[Callable[..., None]] = None, ends_checkpoint: str = ROLLED_BACK) -> Restored:
    """Converge the host to `target`'s config, put those bytes back in the config file, record a new generation.

    Under the ApplyLock. What the current generation set and `target` does not manage is put back
    (pre-images), read back and verified. The file written is `config_path`, else the current
    generation's (a symlinked config keeps its link: the file it names is replaced); an edit in it
    that was never applied is kept beside it first (<config>.unapplied-...). A run refused before it
    wrote (VFs in use, without `force`) changes nothing: neither the file nor the history. A target
    whose config is the current one records nothing new (`already`).
    """
    with locked(host, timeout, cancelled) as now:
        path = config_path or (now.config_path if now is not None else target.config_path)
        check_config_writable(path)  # before anything is written, to the host or the file
        desired = desired_of(target, path)
        change = Change(host, desired, now, command=command, restored_from=target.number,
                        ends_checkpoint=ends_checkpoint, force=force, timeout=timeout, cancelled=cancelled,
                        progress=progress)
        report = change.run()
        result = Restored(report, target)
        if outcome_of(report) is None or report.unrecorded:
            return result
        result.config_path, result.saved = _put_file(path, now, target.config, report)
        result.generation = change.record()
        result.already = result.generation is not None and now is not None and result.generation.number == now.number
        return result


def check_config_writable(path: str) -> None:
    """Refuse (GenerationError) to restore into a config whose directory others could write: whoever
    can, can put a symlink in the config's place and have root overwrite the file it names."""
    from sriov_node.files import config_directory_problem, writer_owners

    why = config_directory_problem(path, writer_owners())
    if why:
        raise GenerationError(f"cannot write {path}: {why}; nothing was written (neither the host nor the file)")


def _read_quiet(path: str) -> Optional[bytes]:
    from sriov_node.files import CONFIG_LIMIT, read_regular

    try:
        return read_regular(path, limit=CONFIG_LIMIT)
    except OSError:
        return None


@dataclass
class Discarded:
    """A bare `rollback` with nothing pending and a file that differs from the applied generation."""

    current: Generation
    config_path: str
    saved: Optional[str]


def discard_edit(host: Host, config_path: Optional[str], *, timeout: float = 60.0,
                 cancelled: Callable[[], bool] = _never) -> Optional[Discarded]:
    """`rollback` without N when no checkpoint is pending and the file holds an edit never applied:
    the edit is what is taken back (kept beside the file), the file gets the applied generation's
    bytes again, the host is not touched. None when there is no such edit (rollback goes on as usual)."""
    from sriov_node.atomic import OutputError, write_config

    with locked(host, timeout, cancelled) as now:
        if now is None or now.pending:
            return None
        path = config_path or now.config_path
        on_disk = _read_quiet(path)
        if on_disk is None or on_disk == now.config:
            return None
        check_config_writable(path)
        saved = save_unapplied(path, now, now.config)
        try:
            write_config(path, now.config)
        except OutputError as exc:
            raise GenerationError(f"the edit in {path} was kept as {saved}, but the file cannot be written: {exc}")
        return Discarded(now, os.path.realpath(path), saved)


def expire_checkpoint(host: Host, number: int, *, timeout: float = 60.0, cancelled: Callable[[], bool] = _never,
                      force: bool = False, command: str = "checkpoint-expired") -> Optional[Restored]:
    """Roll back checkpoint generation `number` to its previous one, if it is still current and pending.

    None when there is nothing to do (committed, superseded, already expired). A rollback refused
    because VFs are in use leaves the checkpoint's config in place and marks it "kept" (so the
    daemon does not retry it in a loop); the returned result says why.
    """
    with locked(host, timeout, cancelled) as gen:
        if gen is None or gen.number != number or not gen.pending:
            return None
        result = restore(host, get(host, gen.checkpoint["previous"]), command=command, force=force,
                         timeout=timeout, cancelled=cancelled, ends_checkpoint=EXPIRED)
        if result.generation is None:
            mark_checkpoint(host, gen, KEPT, reason=f"the rollback to generation {result.target.number} was "
                                                    f"refused ({result.result}): the checkpoint's config stays")
        return result


def disarm_expiry(host: Host, gen: Generation) -> None:
    """A committed checkpoint's timer (if `arm_expiry` made one) is stopped; it would do nothing anyway."""
    import shutil
    import subprocess

    tool = shutil.which("systemctl") if host.is_real_root else None
    if tool is None:
        return
    try:
        subprocess.run([tool, "stop", f"sriov-node-checkpoint-{gen.number}.timer"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pass


def agent_pid(host: Host) -> Optional[int]:
    """The pid of a running agent daemon (from <root>/run/sriov-node/agent.pid), or None."""
    from sriov_node.files import open_own_directory, read_regular

    try:
        fd = open_own_directory(host.path("run"), "sriov-node")  # a symlink there is not followed
        try:
            pid = int(read_regular(host.path(*AGENT_PID), limit=64, follow=False, dir_fd=fd).split()[0])
        finally:
            os.close(fd)
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def arm_expiry(host: Host, gen: Generation, *, config: Optional[str] = None) -> str:
    """Make sure someone rolls checkpoint `gen` back at its deadline; a sentence saying who.

    The agent daemon, when one runs; else a transient systemd timer (`systemd-run --on-active`)
    running `sriov-node rollback --if-uncommitted N`; else (no systemd, a --root tree) nobody
    until the next `boot`, and the sentence says how to do it by hand.
    """
    import shutil
    import subprocess
    import sys

    previous = gen.checkpoint["previous"]
    by_hand = (f"sriov-node{'' if host.is_real_root else ' --root ' + host.root} rollback --if-uncommitted "
               f"{gen.number}")
    pid = agent_pid(host)
    if pid is not None:
        return f"the agent daemon (pid {pid}) restores generation {previous} at the deadline"
    if not host.is_real_root:
        return (f"no timer armed (--root is not /): run {by_hand} to restore generation {previous}; "
                "the next boot restores it too")
    tool = shutil.which("systemd-run")
    if tool is None:
        return (f"no systemd-run here: run {by_hand} to restore generation {previous}; the next boot restores "
                "it too")
    seconds = max(1, int(float(gen.checkpoint["deadline"]) - time.time() + 0.999))
    argv = [tool, f"--on-active={seconds}", f"--unit=sriov-node-checkpoint-{gen.number}",
            f"--description=sriov-node: roll back generation {gen.number} unless committed",
            sys.executable, "-m", "sriov_node"] + (["--config", os.path.abspath(config)] if config else []) \
        + ["rollback", "--if-uncommitted", str(gen.number)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"systemd-run failed ({exc}): run {by_hand} to restore generation {previous}"
    if proc.returncode != 0:
        return (f"systemd-run failed ({proc.stderr.strip() or proc.returncode}): run {by_hand} to restore "
                f"generation {previous}")
    return f"timer sriov-node-checkpoint-{gen.number}.timer restores generation {previous} in {seconds} s"
