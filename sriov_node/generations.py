"""Applied generations: the desired state the node converges to, and its history.

Every command that converged the host toward a config (apply, set, unset, boot, reload, rollback,
an expired checkpoint) records a generation after its run, under the apply lock: the config's
exact bytes, their sha256, the real path they were read from, the time, the command, the outcome
and each PF's result. The newest generation is the *current* one: what `status` compares the host
with and what the daemon repairs toward. An edited file is not desired state until it is applied.

    <root>/var/lib/sriov-node/generations/00000001.json, 00000002.json, ...

Records are written atomically (write, fsync, rename, fsync the directory) and read with
`files.read_regular(follow=False)`: a symlink or a FIFO planted in their place is refused, never
followed. History is append-only (a rollback records a new generation holding the old bytes) and
bounded: the oldest beyond `[history] keep` (default 20) are removed, never the current one nor
the generation a pending checkpoint falls back to.

A checkpoint (`apply --checkpoint S`) is a generation with `checkpoint = {"deadline": wall clock,
"previous": N, "state": "pending"}`; `commit` marks it "committed"; past its deadline (the daemon's
timer, a `systemd-run` timer running `rollback --if-uncommitted N`, or the next `boot`) generation
N's previous config is restored and recorded anew, and the checkpoint is marked "expired".
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from sriov_node.errors import StateError, describe_os_error
from sriov_node.host import Host

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.model import DesiredState
    from sriov_node.reconcile import Report

GENERATIONS_DIR = "var/lib/sriov-node/generations"
_NAME_RE = re.compile(r"^(\d{8,})\.json\Z")
FORMAT = 1

# Generation.outcome
CONVERGED, FAILED, INTERRUPTED = "converged", "failed", "interrupted"
# Generation.checkpoint["state"]
PENDING, COMMITTED, EXPIRED, SUPERSEDED, KEPT = "pending", "committed", "expired", "superseded", "kept"


class GenerationError(StateError):
    """A generation that does not exist, a record that cannot be read or written, nothing to commit."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class Generation:
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

    @property
    def pending(self) -> bool:
        return bool(self.checkpoint) and self.checkpoint.get("state") == PENDING

    def describe_time(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))

    def to_dict(self, *, config: bool = True) -> Dict[str, Any]:
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
        }
        if config:
            try:
                body["config"] = self.config.decode("utf-8")
            except UnicodeDecodeError:  # kept exact all the same
                body["config_base64"] = base64.b64encode(self.config).decode("ascii")
        return body


def directory(host: Host) -> str:
    return host.path(GENERATIONS_DIR)


def _path(host: Host, number: int) -> str:
    return os.path.join(directory(host), f"{number:08d}.json")


def _numbers(host: Host) -> List[int]:
    try:
        names = os.listdir(directory(host))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise GenerationError(f"cannot list the generations in {directory(host)}: {describe_os_error(exc)}")
    return sorted(int(m.group(1)) for m in map(_NAME_RE.match, names) if m)


def _load(host: Host, number: int) -> Generation:
    from sriov_node.files import STATE_LIMIT, UnsafeFile, read_regular

    path = _path(host, number)
    try:
        data = read_regular(path, limit=STATE_LIMIT, follow=False)
    except FileNotFoundError:
        raise GenerationError(f"generation {number} does not exist; see sriov-node history")
    except UnsafeFile as exc:
        raise GenerationError(f"generation record {exc}")
    except OSError as exc:
        raise GenerationError(f"cannot read generation record {path}: {describe_os_error(exc)}")
    try:
        body = json.loads(data.decode("utf-8"))
        if "config_base64" in body:
            config = base64.b64decode(body["config_base64"].encode("ascii"), validate=True)
        else:
            config = body["config"].encode("utf-8")
        gen = Generation(
            number=int(body["number"]), sha256=str(body["sha256"]), config=config,
            config_path=str(body["config_path"]), time=float(body["time"]), command=str(body["command"]),
            outcome=str(body["outcome"]), pfs=dict(body.get("pfs") or {}), checkpoint=body.get("checkpoint"),
            restored_from=body.get("restored_from"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GenerationError(f"generation record {path} is damaged ({exc}); remove it or restore it from a backup")
    if gen.number != number or hashlib.sha256(gen.config).hexdigest() != gen.sha256:
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
    from sriov_node.atomic import OutputError, write_atomic

    folder = directory(host)
    try:
        os.makedirs(folder, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise GenerationError(f"cannot create the generations directory {folder}: {describe_os_error(exc)}")
    path = _path(host, gen.number)
    if os.path.islink(path) or (not replace and os.path.lexists(path)):
        # write_atomic would write through a symlink; a new record's name must be free
        raise GenerationError(f"generation record {path} is in the way (a symlink or a stray file); remove it")
    data = (json.dumps(gen.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    try:
        write_atomic(path, data, mode=0o644)
    except OutputError as exc:
        raise GenerationError(f"cannot record generation {gen.number}: {exc}")


def _replace(gen: Generation, **changes: Any) -> Generation:
    body = dict(gen.__dict__)
    body.update(changes)
    return Generation(**body)


def record(host: Host, config: bytes, config_path: str, *, command: str, outcome: str,
           pfs: Dict[str, Dict[str, Any]], checkpoint_seconds: Optional[float] = None,
           restored_from: Optional[int] = None, now: Optional[float] = None) -> Generation:
    """Append a generation (call it under the ApplyLock, after a run that wrote toward `config`).

    With `checkpoint_seconds`, the generation is a pending checkpoint falling back to the current
    one (GenerationError if there is none). A pending checkpoint that a new generation replaces
    is marked "superseded" (its fallback no longer applies: the new generation is the desired state).
    """
    if outcome not in (CONVERGED, FAILED, INTERRUPTED):
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
    if previous is not None and previous.pending:
        _write(host, _replace(previous, checkpoint=dict(previous.checkpoint, state=SUPERSEDED,
                                                        superseded_by=(numbers[-1] + 1))), replace=True)
    gen = Generation(
        number=(numbers[-1] + 1) if numbers else 1,
        sha256=hashlib.sha256(config).hexdigest(),
        config=bytes(config),
        config_path=os.path.realpath(config_path),
        time=round(now, 3),
        command=command,
        outcome=outcome,
        pfs=pfs,
        checkpoint=checkpoint,
        restored_from=restored_from,
    )
    _write(host, gen, replace=False)
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
    for n in numbers:
        if excess <= 0:
            break
        if n in protected:
            continue
        try:
            os.unlink(_path(host, n))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise GenerationError(f"cannot remove the old generation record {_path(host, n)}: "
                                  f"{describe_os_error(exc)}")
        excess -= 1


def commit(host: Host, *, now: Optional[float] = None) -> Generation:
    """Make the pending checkpoint permanent (call it under the ApplyLock). GenerationError if there is
    none, or if its deadline has passed (it is due to be rolled back: say so rather than race it)."""
    gen = current(host)
    if gen is None or not gen.checkpoint:
        raise GenerationError("no checkpoint to commit: the current generation "
                              + (f"{gen.number} ({gen.command}) is already permanent" if gen else "does not exist"))
    state = gen.checkpoint.get("state")
    if state == COMMITTED:
        return gen
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
