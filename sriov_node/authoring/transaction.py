"""`sriov-node set` and `unset` on a host: find the PF's block, edit it, apply, then save or put back, under the apply lock.

The text itself is edited by `authoring.toml_blocks` (pure block surgery); here the edited bytes
must also pass the schema and fit this host. A UTF-8 byte-order mark and CRLF line ends are kept.
What happens next (apply, then save, under the apply lock) is `Transaction`'s: the file is
replaced only once the host converged to the edit.

Which block `PF` means: the argument is an interface name, a PCI address or a MAC, and selects
the block whose selector says that literally (`name = "ens1f0"`, `pci = "0000:20:00.0"`, `mac =
"..."`). Otherwise the block that selects that PF on this host (`set ens1f0` edits a `pci = ...`
block of the PF named ens1f0); a fleet rule (vendor+device) is never edited (it holds other PFs
too). Otherwise `set` appends a new block selecting the PF as the argument names it, if this host
has that PF.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from sriov_node.authoring.toml_blocks import Edit, EditError, _load, apply_edit, remove_edit
from sriov_node.config import (
    _MAC_RE,
    check_file_trust,
    check_ifname,
    decode_config,
    normalize_pci,
    parse_config,
    parse_toml,
    read_config,
)
from sriov_node.errors import EXIT_PF_FAILED, ConfigError, SriovNodeError, UsageError
from sriov_node.host import Host
from sriov_node.model import DesiredState, HostState, PfSelector, PfSpec, PfState


class PfNotHere(SriovNodeError):
    """`set` would add a block for a PF this host does not have."""

    exit_code = EXIT_PF_FAILED


# ---------------------------------------------------------------------------- which PF


@dataclass(frozen=True)
class PfRef:
    text: str
    kind: str  # "name" | "pci" | "mac"
    value: str

    def same(self, written: Any) -> bool:
        if not isinstance(written, str):
            return False
        if self.kind == "pci":
            return normalize_pci(written) == self.value
        if self.kind == "mac":
            return written.lower() == self.value
        return written == self.value

    def is_pf(self, pf: PfState) -> bool:
        return {"name": self.value in pf.netdevs, "pci": pf.pci == self.value, "mac": pf.mac == self.value}[self.kind]


def parse_pf(text: str) -> PfRef:
    pci = normalize_pci(text) if re.fullmatch(r"[0-9A-Fa-f:.]+", text) else None
    if pci is not None:
        return PfRef(text, "pci", pci)
    if _MAC_RE.match(text.lower()):
        return PfRef(text, "mac", text.lower())
    why = check_ifname(text)
    if why:
        raise UsageError(f"PF {text!r}: not a PCI address or MAC, and as an interface name it {why}")
    return PfRef(text, "name", text)


# ---------------------------------------------------------------------------- on a host, under a lock


@dataclass(frozen=True)
class EditResult:
    path: str  # the config's real path (symlinks resolved): the file that is replaced
    before: Optional[bytes]  # None: the file did not exist
    after: bytes
    block: Optional[str]  # "pf[1]", None when nothing selected the PF (unset)
    created: bool = False
    removed: bool = False
    what: str = ""
    desired: Optional[DesiredState] = None
    only: FrozenSet[str] = frozenset()  # the PFs the edited block selects on this host
    unresolved: Tuple[Any, ...] = ()  # PfOutcomes: the edited block does not fit this host
    note: Optional[str] = None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        old = (self.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = self.after.decode("utf-8", "replace").splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, new, self.path, self.path))

    def summary(self) -> str:
        if self.removed:
            return f"removed {self.block}"
        return f"{'added' if self.created else 'changed'} {self.block}: {self.what}"

    def to_dict(self) -> Dict[str, Any]:
        return {"config": self.path, "block": self.block, "created": self.created, "removed": self.removed,
                "changed": self.changed, "diff": self.diff(), "note": self.note}


@dataclass
class Done:
    """How a `set`/`unset` transaction ended."""

    exit_code: int
    saved: bool = False  # the edited file replaced the old one
    backup: Optional[str] = None  # the previous version (config.toml.bak)
    rejected: Optional[str] = None  # the refused or failed edit (config.toml.rejected); the file is as it was
    generation: Optional[int] = None  # the generation recorded for it
    report: Any = None  # the engine's Report of the edited PF
    restore: Any = None  # the Report of putting the PF back to the file as it was, after a failed run
    message: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"exit_code": self.exit_code, "saved": self.saved, "backup": self.backup, "rejected": self.rejected,
                "generation": self.generation, "message": self.message,
                "restore": self.restore.to_dict() if self.restore is not None else None}


class Conflict(SriovNodeError):
    """Someone rewrote the config (by hand, not through sriov-node) while `set` applied its edit."""


@dataclass(frozen=True)
class _Shape:
    """How the file is written byte-wise, kept through an edit: a UTF-8 byte-order mark, CRLF line ends."""

    bom: bool = False
    crlf: bool = False

    @staticmethod
    def of(data: Optional[bytes]) -> "_Shape":
        if not data:
            return _Shape()
        body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        lf = body.count(b"\n")
        return _Shape(bom=body is not data, crlf=lf > 0 and body.count(b"\r\n") == lf)

    def plain(self, data: Optional[bytes]) -> Optional[bytes]:
        if data is None:
            return None
        body = data[3:] if self.bom else data
        return body.replace(b"\r\n", b"\n") if self.crlf else body

    def dress(self, data: bytes) -> bytes:
        if self.crlf:
            data = data.replace(b"\n", b"\r\n")
        return (b"\xef\xbb\xbf" + data) if self.bom else data


def _read(path: str) -> Optional[bytes]:
    """The config's bytes through the config's own reader (None: no file yet, `set` creates it)."""
    try:
        return read_config(path)[0]
    except ConfigError:
        if not os.path.lexists(path):
            return None
        raise


def _text(data: Optional[bytes], path: str) -> str:
    """The text to edit, read as every command reads the config (config.decode_config, then TOML).

    `data` comes through _Shape.plain: a byte-order mark and CRLF line ends throughout are taken
    off there and put back when the file is written; a mix of CRLF and LF is refused.
    """
    if data is None:
        return ""
    text = decode_config(data, path)
    if "\r\n" in text:
        raise EditError(f"{path} mixes Windows (CRLF) and Unix (LF) line ends; convert it (dos2unix) before "
                        "editing it with `set`")
    parse_toml(text, path)  # not valid TOML: the same error as validate's
    return text


class _Heads:
    """The PFs, none of their VFs, read once for an edit: which PF a reference means and which block
    selects it, in the file as it is and as edited (what resolution needs: a `set` reads no VF)."""

    def __init__(self, host: Host, ref: PfRef):
        self.host = host
        self.ref = ref
        self.read: Optional[Tuple[bool, FrozenSet[str], FrozenSet[str]]] = None  # (macs, ifnames, devices)
        self.heads: Optional[HostState] = None  # read when first asked

    def of(self, desired: Optional[DesiredState]) -> HostState:
        """The PFs as resolving `desired` needs them: those already read when they do."""
        sels = [s.selector for s in desired.pfs] if desired is not None else []
        ref = self.ref
        macs = ref.kind == "mac" or any(s.mac is not None for s in sels)
        names = frozenset([s.name for s in sels if s.name is not None] + ([ref.value] if ref.kind == "name" else []))
        devices = frozenset([s.pci for s in sels if s.pci is not None] + ([ref.value] if ref.kind == "pci" else []))
        if self.heads is None or self.read is None or not (
                (self.read[0] or not macs) and names <= self.read[1] and devices <= self.read[2]):
            from sriov_node.engine.survey import heads_of

            if self.read is not None:  # what was read before is asked again: the answers stay comparable
                macs, names, devices = macs or self.read[0], names | self.read[1], devices | self.read[2]
            self.heads = heads_of(self.host, None, macs=macs, ifnames=tuple(sorted(names)),
                                  devices=tuple(sorted(devices)))
            self.read = (macs, names, devices)
        return self.heads


def _parsed(data: Optional[bytes], path: str) -> Optional[DesiredState]:
    """The config `data`, or None (no file, or an invalid one: only a literal selector says which block is meant)."""
    if data is None:
        return None
    try:
        return parse_config(data, path)
    except ConfigError:
        return None


def _block_of(heads: _Heads, desired: Optional[DesiredState], ref: PfRef, raw_pfs: List[Any],
              path: str) -> Optional[int]:
    """The index of the block `ref` means: written literally, else selecting that PF on this host."""
    for i, table in enumerate(raw_pfs):
        if isinstance(table, dict) and ref.same(table.get(ref.kind)):
            return i
    if desired is None:
        return None
    from sriov_node.engine.resolve import resolve

    pfs = heads.of(desired)
    pci = next((pf.pci for pf in pfs.pfs if ref.is_pf(pf)), None)
    if pci is None:
        return None
    for target in resolve(desired, pfs).targets:
        if target.pf.pci == pci:
            spec = target.spec
            if spec.selector.is_fleet_rule:
                raise EditError(f"PF {target.pf.label} is selected by the fleet rule {spec.key} "
                                f"({spec.selector.describe()}); set edits one PF's own block, and a second block for "
                                f"this PF would clash with the rule: edit {spec.key} in {path} by hand (it applies to "
                                "every PF it selects)")
            return int(spec.key[3:-1])
    return None


def _check_pf_here(heads: _Heads, ref: PfRef, path: str) -> None:
    """Refuse to add a block for a PF this host does not have (a typo would otherwise be saved)."""
    from sriov_node.engine.resolve import resolve

    spec = PfSpec(key="pf[new]", selector=PfSelector(**{ref.kind: ref.value}), num_vfs=0)
    desired = DesiredState(path, b"", 1, (spec,))
    resolution = resolve(desired, heads.of(desired))
    if resolution.failures:
        raise PfNotHere(f"{ref.text}: {resolution.failures[0].message}; nothing was written")


def _trusted(host: Host, path: str) -> None:
    """Before the edit, the run and the save: a config directory others can write is refused on any
    root (the file is written on this machine's file system all the same); the file itself, as the
    engine's loader does, on the real root."""
    from sriov_node.files import config_directory_problem, writer_owners

    why = config_directory_problem(path, writer_owners())
    if why:
        raise EditError(f"cannot write {path}: {why}; nothing was written")
    if host.is_real_root and os.geteuid() == 0:
        try:
            st = os.stat(path)
        except OSError:
            return
        why = check_file_trust(path, st)
        if why:
            raise EditError(f"{path} {why}; nothing was written")


def _never() -> bool:
    return False


def _make_directory(directory: str) -> None:
    """The config's directory, for a first `set` that creates the file."""
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        from sriov_node.errors import describe_os_error

        raise EditError(f"cannot create {directory} for the config: {describe_os_error(exc)}")


class Transaction:
    """`set`/`unset`: edit, apply and save as one step under the machine-wide apply lock.

        with Transaction(host, config, timeout=...) as tx:   # takes state.ApplyLock
            result = tx.prepare(pf, edit)    # read the real file, edit, validate: nothing written
            report = tx.apply(force=...)     # the engine converges the edited PF to the edited bytes
            done = tx.finish(report)         # converged: save the file, record a generation;
                                             # else: the file stays byte for byte, the edit goes to
                                             # config.toml.rejected, a failed PF is put back

    The lock is the one `apply`, `boot`, the daemon and rollback take (<root>/run/sriov-node/
    apply.lock), so two `set`s, one through a symlink to the config and one through its real path,
    run one after the other and the second edits the first one's file: no lost update. The file
    written is the config's real path (a symlink stays a symlink).

    The engine runs on the edited bytes in memory; the file is renamed into place only after the
    read-back says converged, then the generation is recorded, both before the lock is released.
    A process killed (or a machine losing power) before the rename leaves the old file: `boot` and
    `apply` read the old config and put the PF back to it (the edit is lost as if never made; the
    host's partial change shows as DIFFERS in `status` until then). Killed between the rename
    (write, fsync, rename, fsync dir) and the record: the file holds the applied edit and `status`
    says it differs from the applied generation; `boot` reads the file, converges to it (nothing to
    do) and records it. The new file is never in place unapplied and unsaid.
    """

    def __init__(self, host: Host, config: Optional[str], *, timeout: float, command: str = "set",
                 cancelled: Callable[[], bool] = _never, on_wait: Optional[Callable[[str], None]] = None):
        from sriov_node.engine.reconcile import config_path

        self.host = host
        self.given = config_path(host, config)
        self.path = os.path.realpath(self.given)
        self.timeout = timeout
        self.command = command
        self.cancelled = cancelled
        self.on_wait = on_wait
        self.result: Optional[EditResult] = None
        self.whole = False  # run every PF of the edited file, not only the edited block's
        self.notice: Optional[str] = None
        self.mode_notice: Optional[str] = None  # the file's mode was narrowed when it was saved
        self._lock: Any = None
        self.change: Any = None  # the generations.Change of the edit (apply, record)
        self.removed_from: FrozenSet[str] = frozenset()  # the PFs a removed block selected

    def __enter__(self) -> "Transaction":
        from sriov_node.errors import LockTimeout
        from sriov_node.engine.state import ApplyLock, _read_quiet

        _trusted(self.host, self.given)  # the link's directory and the real file's
        lock = ApplyLock(self.host, 0.0, self.cancelled)  # one try, to say so when another run holds it
        try:
            lock.__enter__()
        except LockTimeout:
            if self.on_wait is not None:
                self.on_wait(_read_quiet(lock.path))
            lock = ApplyLock(self.host, self.timeout, self.cancelled)
            lock.__enter__()
        self._lock = lock
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.__exit__(*exc)
            self._lock = None

    # -------------------------------------------------------------- the edit

    def _read_text(self) -> Tuple[Optional[bytes], _Shape, str]:
        # read through the path as given (a symlink is followed), so that a refusal names the
        # config as the user knows it; the bytes are those of the real file written later
        before = _read(self.given)
        if before is not None:
            decode_config(before, self.given)  # the one decoder's answer, byte offsets as in the file
        shape = _Shape.of(before)
        return before, shape, _text(shape.plain(before), self.given)

    def prepare(self, pf: str, edit: Edit) -> EditResult:
        """Edit (or add) the PF's block and validate it (schema, then which PF it selects here)."""
        from sriov_node.engine.reconcile import PfOutcome
        from sriov_node.engine.resolve import resolve

        ref = parse_pf(pf)
        before, shape, text = self._read_text()
        doc = _load(text) if text else {}
        raw_pfs = doc.get("pf", []) if isinstance(doc.get("pf", []), list) else []
        old = _parsed(before, self.path)
        heads = _Heads(self.host, ref)  # the PFs, read once when asked; none of their VFs (the run reads those)
        index = _block_of(heads, old, ref, raw_pfs, self.path)
        if index is None:
            _check_pf_here(heads, ref, self.path)
        after = shape.dress(apply_edit(text, index, (ref.kind, ref.value), edit).encode("utf-8"))
        desired = parse_config(after, self.path)  # a ConfigError here: exit 2, the file untouched
        block = f"pf[{index if index is not None else len(raw_pfs)}]"
        resolution = resolve(desired, heads.of(desired))
        only = frozenset(t.pf.pci for t in resolution.targets if t.spec.key == block)
        unresolved = tuple(PfOutcome(f.pf, None, f.key, "failed", error=f"{self.path}: {f.render()}",
                                     detail={"kind": f.kind, "key": f"{f.key}.{f.attr}" if f.attr else f.key})
                           for f in resolution.failures if f.key == block)
        self.result = EditResult(self.path, before, after, block, created=index is None, what=edit.describe(),
                                 desired=desired, only=only, unresolved=unresolved)
        self._scope(before)
        return self.result

    def _scope(self, before: Optional[bytes]) -> None:
        """Which PFs the run converges. The edited block's PFs, when the file as it was is the applied
        generation (or there is none: the file is then what the node follows). A file that also
        holds changes never applied would make the new generation claim them converged: then every
        PF of the edited file is run, and the output says why."""
        from sriov_node import generations

        result = self.result
        assert result is not None
        current = generations.current(self.host)
        if current is None or before is None or current.sha256 == hashlib.sha256(before).hexdigest():
            return
        self.whole = True
        self.notice = (f"{self.path} held changes not yet applied (it differs from the applied generation "
                       f"{current.number}): every PF of the edited file is applied, not only {result.block}")

    def prepare_removal(self, pf: str) -> EditResult:
        """`unset PF`: remove the PF's block (nothing to remove is not an error)."""
        ref = parse_pf(pf)
        before, shape, text = self._read_text()
        if before is None:
            raise EditError(f"{self.path}: no such file; nothing to remove")
        doc = _load(text)
        raw_pfs = doc.get("pf", []) if isinstance(doc.get("pf", []), list) else []
        index = _block_of(_Heads(self.host, ref), _parsed(before, self.path), ref, raw_pfs, self.path)
        if index is None:
            self.result = EditResult(self.path, before, before, None, removed=True, note=f"no block selects {ref.text}")
            return self.result
        after = shape.dress(remove_edit(text, index).encode("utf-8"))
        desired = parse_config(after, self.path)
        block = f"pf[{index}]"
        self.removed_from = _selected_by(self.host, before, self.path, block)
        self.result = EditResult(self.path, before, after, block, removed=True, desired=desired,
                                 only=self.removed_from)
        self._scope(before)
        return self.result

    # -------------------------------------------------------------- apply, save, or put back

    @property
    def runs(self) -> bool:
        """Whether there is anything to converge (a removed block: its PFs, put back as they were found)."""
        result = self.result
        return result is not None and result.desired is not None and (self.whole or bool(result.only))

    @property
    def unresolved(self) -> Tuple[Any, ...]:
        """The edited block's failures on this host, when the run itself does not report them."""
        return () if self.whole or self.result is None else self.result.unresolved

    def apply(self, *, force: bool = False, progress: Any = None) -> Any:
        """Converge to the edited bytes (the file is not written yet): the edited block's PFs, or every PF.
        What the applied generation set there and the edit no longer manages is put back (a removed
        block's PF too). Before any write: room for the file, its backup and the record, or nothing."""
        from sriov_node import generations
        from sriov_node.engine.reconcile import Report

        result = self.result
        assert result is not None and result.desired is not None
        self.change = generations.Change(self.host, result.desired, generations.current(self.host),
                                         command=self.command, force=force, timeout=self.timeout,
                                         cancelled=self.cancelled, progress=progress)
        if not self.runs:
            report = Report([], [], 0, False)
            self.change.reports.append(report)
        else:
            if result.changed:
                generations.check_room(os.path.dirname(self.path), len(result.after) + len(result.before or b"") + 4096,
                                       f"{os.path.basename(self.path)} and its backup")  # exit 1, nothing written
            report = self.change.run(only=None if self.whole else result.only)
        if self.notice:
            report.notices.insert(0, self.notice)
        return report

    def save(self) -> Optional[str]:
        """Replace the file with the edited bytes (the old one kept as .bak); the backup's path.
        (atomic.write_config: never through a symlink put there, mode at most 0644: `mode_notice` says
        when a wider mode was narrowed.)"""
        from sriov_node.atomic import write_config

        result = self.result
        assert result is not None
        if not result.changed:
            return None
        if _read(self.path) != result.before:
            raise Conflict(f"{self.path} changed while it was being edited; nothing was written: run the command again")
        owner = None
        if result.before is not None:
            st = os.stat(self.path)
            owner = (st.st_uid, st.st_gid)
        else:
            _make_directory(os.path.dirname(self.path))
        backup, self.mode_notice = write_config(self.path, result.after, owner=owner, backup=result.before)
        return backup

    def record(self, report: Any) -> Optional[int]:
        """The edited config as the node's new generation (the one the daemon converges to); its number.
        The same bytes as the current generation record nothing new."""
        from sriov_node import generations

        result = self.result
        assert result is not None and result.desired is not None
        if self.change is None:
            gen = generations.record_report(self.host, result.desired, report, command=self.command)
        else:
            gen = self.change.record()
        return gen.number if gen is not None else None

    def finish(self, report: Any) -> Done:
        """Converged: save and record. Otherwise: keep the file, write the edit to .rejected, put a failed PF back."""
        from sriov_node.errors import EXIT_OK, EXIT_REFUSED

        result = self.result
        assert result is not None
        code = report.exit_code if not self.unresolved else max(report.exit_code, EXIT_PF_FAILED)
        done = Done(code, report=report)
        if code == EXIT_OK:
            try:
                done.backup = self.save()
            except Conflict as exc:
                done.exit_code = EXIT_PF_FAILED
                done.rejected = self._reject()
                done.message = (f"{exc.args[0].split(';')[0]}; the host was converged to the edit, which is kept in "
                                f"{done.rejected}; the file keeps the other change: review both, then run "
                                "sriov-node apply")
                return done
            done.saved = True
            done.generation = self.record(report)
            applied = "applied and saved" if report.outcomes else "saved (its PFs are left as they are)"
            done.message = (f"{result.path}: " + (f"{result.summary()}: {applied}"
                                                  if result.changed else "unchanged; applied")
                            + (f"; previous version in {done.backup}" if done.backup else "")
                            + (f"; generation {done.generation}" if done.generation is not None else "")
                            + (f"; {self.mode_notice}" if self.mode_notice else ""))
            return done
        done.rejected = self._reject() if result.changed else None
        why = {EXIT_REFUSED: "the host refused the edit"}.get(code, "the edit did not converge")
        if report.interrupted or self.cancelled():
            why = "the run was interrupted"
        elif report.writes:
            done.restore = self._put_back()
        done.message = (f"{result.path}: left as it was, byte for byte: {why}"
                        + (f"; the edit is kept in {done.rejected}" if done.rejected else "")
                        + _restore_words(done.restore, report, self.cancelled()))
        return done

    def _reject(self) -> Optional[str]:
        from sriov_node.atomic import OutputError, write_atomic

        result = self.result
        assert result is not None
        rejected = self.path + ".rejected"
        try:
            mode = os.stat(self.path).st_mode & 0o644 if result.before is not None else 0o644
            _make_directory(os.path.dirname(self.path))
            write_atomic(rejected, result.after, mode=mode, follow=False)  # a symlink there is refused
        except (OSError, OutputError):
            return None
        return rejected

    def _put_back(self) -> Any:
        """After a failed run that wrote: converge the edited PFs to the file as it was (and still is)."""
        from sriov_node.errors import ConfigError
        from sriov_node.engine.reconcile import reconcile

        result = self.result
        assert result is not None
        if result.before is None:
            return None
        try:
            old = parse_config(result.before, self.path)
        except ConfigError:
            return None
        from sriov_node.engine.preimages import merge

        # what the failed run took over goes back as it found it; what the file manages, to the file
        now = self.change.now if self.change is not None else None
        undo = merge(now.restores if now else {}, self.change.preimages() if self.change is not None else {})
        return reconcile(self.host, old, only=None if self.whole else result.only, timeout=self.timeout,
                         cancelled=self.cancelled, restore=undo or None, restore_all=True)


def _selected_by(host: Host, data: Optional[bytes], path: str, block: str) -> FrozenSet[str]:
    """The PFs block `block` of the config `data` selects on this host."""
    if data is None:
        return frozenset()
    try:
        desired = parse_config(data, path)
    except ConfigError:
        return frozenset()
    from sriov_node.engine.survey import survey

    return frozenset(t.pf.pci for t in survey(host, desired, vfs=False).resolution.targets if t.spec.key == block)


def _restore_words(restore: Any, report: Any, cancelled: bool) -> str:
    if restore is not None:
        selected = [o for o in restore.outcomes if o.pci is not None]
        if selected and restore.exit_code == 0:
            return "; the PF was put back to the file's config (converged)"
        if selected:
            return f"; putting the PF back to the file's config did not converge either ({restore.result}): see below"
        return "; the file's config does not manage this PF: it is left as the failed run left it"
    if report.writes:
        return "; the PF may differ from the file: run sriov-node apply" if cancelled else ""
    return "; nothing was written to the host"
