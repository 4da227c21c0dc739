"""`sriov-node set` and `unset`: change one PF's block of the config in place, keeping the rest as it was written.

The file is cut into segments at its table headers; the comment lines right above a header belong
to it. A `[[pf]]` block is its `[[pf]]` segment and the `[[pf.vfs]]` segments after it. Untouched
segments are copied byte for byte; inside the segments that change, tomlkit replaces, adds or
removes keys and keeps the rest of their lines (comments, spacing, quoting). The result must
parse to exactly the document asked for (the old one with this edit) and pass the schema before it
replaces the file (atomically, the previous version kept as config.toml.bak).

Which block `PF` means: the argument is an interface name, a PCI address or a MAC, and selects
the block whose selector says that literally (`name = "ens1f0"`, `pci = "0000:20:00.0"`, `mac =
"..."`). Otherwise the block that selects that PF on this host (`set ens1f0` edits a `pci = ...`
block of the PF named ens1f0); a fleet rule (vendor+device) is never edited (it holds other PFs
too). Otherwise `set` appends a new block selecting the PF as the argument names it, if this host
has that PF.
"""

from __future__ import annotations

import copy
import difflib
import fcntl
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from sriov_node.config import (
    BOM,
    _MAC_RE,
    check_file_trust,
    check_ifname,
    decode_config,
    normalize_pci,
    parse_config,
    parse_range,
    parse_toml,
    read_config,
)
from sriov_node.errors import EXIT_INVALID, EXIT_PF_FAILED, ConfigError, SriovNodeError, UsageError
from sriov_node.host import Host
from sriov_node.model import DesiredState, PfSelector, PfSpec, PfState

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

# The [[pf]] keys `set` may change (the selector is the PF argument itself; VF groups go through vfs=).
SETTABLE = ("num_vfs", "mtu", "eswitch_mode", "drivers_autoprobe", "externally_managed")
SELECTOR_KEYS = ("name", "pci", "mac", "vendor", "device", "index")
REMOVE = object()  # KEY= : drop the key

_HEADER_RE = re.compile(r"^[ \t]*(\[\[?)([^\[\]\n]*?)(\]\]?)[ \t]*(#.*)?\r?\n?\Z")
_COMMENT_RE = re.compile(r"^[ \t]*#")
_QUIET_RE = re.compile(r"^[ \t]*(#.*)?\r?\n?\Z")  # blank or comment-only
NEW_FILE_HEAD = ("# sriov-node desired state. `sriov-node validate` checks it; `sriov-node apply` converges to it.\n"
                 "version = 1\n")


class EditError(SriovNodeError):
    """The edit is refused; the file is left as it was."""

    exit_code = EXIT_INVALID


class PfNotHere(SriovNodeError):
    """`set` would add a block for a PF this host does not have."""

    exit_code = EXIT_PF_FAILED


# ---------------------------------------------------------------------------- what to change


@dataclass(frozen=True)
class GroupEdit:
    range_text: str
    driver: Optional[str]  # None: the kernel's default (no driver key)


@dataclass(frozen=True)
class Edit:
    keys: Tuple[Tuple[str, Any], ...] = ()  # (key, value or REMOVE), in the order given
    groups: Optional[Tuple[GroupEdit, ...]] = None  # None: leave the VF groups alone; (): no groups

    def describe(self) -> str:
        parts = [f"{k} removed" if v is REMOVE else f"{k} = {_show(v)}" for k, v in self.keys]
        if self.groups is not None:
            parts.append("vfs = [" + ", ".join(f"{g.range_text} {g.driver or 'default driver'}"
                                               for g in self.groups) + "]")
        return ", ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _literal(text: str) -> Any:
    """A command-line value as TOML would read it: 8 -> int, true -> bool, anything else a string."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return text
    return value if isinstance(value, (bool, int, str)) else text


def parse_assignments(args: Sequence[str]) -> Edit:
    """`num_vfs=8 vfs=0-3:vfio-pci vfs=4-7:iavf mtu=` -> Edit. Raises UsageError (exit 2)."""
    keys: Dict[str, Any] = {}
    groups: Optional[List[GroupEdit]] = None
    cleared = False
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{arg!r}: write KEY=VALUE, e.g. num_vfs=8 or vfs=0-3:vfio-pci")
        if key == "vfs":
            groups = groups if groups is not None else []
            if value.strip() == "":
                cleared = True
            else:
                rng, _, driver = value.partition(":")
                groups.append(GroupEdit(rng.strip(), driver.strip() or None))
            if cleared and groups:
                raise UsageError("vfs= (no VF groups) and vfs=RANGE:DRIVER contradict each other; give one")
            continue
        if key in SELECTOR_KEYS:
            raise UsageError(f"{key}: the PF argument is the selector; to select the PF by {key}, `sriov-node unset` "
                             f"it and `sriov-node set` it again by its {key}")
        if key not in SETTABLE:
            raise UsageError(f"{key!r}: set changes {', '.join(SETTABLE)} and vfs=RANGE[:DRIVER] (VF settings such as "
                             "vlan or mac: edit the file)")
        if key in keys:
            raise UsageError(f"{key} is given twice")
        keys[key] = REMOVE if value.strip() == "" else _literal(value.strip())
    if not keys and groups is None:
        raise UsageError("nothing to set; e.g. num_vfs=8 vfs=0-3:vfio-pci vfs=4-7:iavf")
    return Edit(tuple(keys.items()), tuple(groups) if groups is not None else None)


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


# ---------------------------------------------------------------------------- the file as segments


@dataclass
class Segment:
    path: Tuple[str, ...]  # ("pf",), ("pf", "vfs"), ("device_plugin",)
    array: bool
    lines: List[str]

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def split_tail(self) -> Tuple[List[str], List[str]]:
        """(header and keys, the blank and comment lines after its last key)."""
        end = len(self.lines)
        while end > 1 and _QUIET_RE.match(self.lines[end - 1]):
            end -= 1
        return self.lines[:end], self.lines[end:]


@dataclass
class Block:
    """One [[pf]] block: its segment and its [[pf.vfs]] segments (indices into the segment list)."""

    pf: int
    vfs: List[int] = field(default_factory=list)
    others: List[int] = field(default_factory=list)  # [pf.x] sub-tables (invalid, kept with the block)

    @property
    def segments(self) -> List[int]:
        return sorted([self.pf] + self.vfs + self.others)


def _header_path(inside: str) -> Tuple[str, ...]:
    return tuple(p.strip().strip("\"'") for p in inside.split("."))


def split_segments(text: str) -> Tuple[List[str], List[Segment]]:
    lines = text.splitlines(keepends=True)
    heads = []
    for i, line in enumerate(lines):
        m = _HEADER_RE.match(line)
        if m and (m.group(1) == "[[") == (m.group(3) == "]]"):
            heads.append((i, _header_path(m.group(2)), m.group(1) == "[["))
    starts = []
    floor = 0
    for i, path, array in heads:
        start = i
        while start > floor and _COMMENT_RE.match(lines[start - 1]):
            start -= 1  # comment lines right above a header belong to it
        starts.append(start)
        floor = i + 1
    preamble = lines[: starts[0]] if starts else lines
    segments = [Segment(path, array, lines[start: (starts[k + 1] if k + 1 < len(starts) else len(lines))])
                for k, ((_, path, array), start) in enumerate(zip(heads, starts))]
    return preamble, segments


def find_blocks(segments: List[Segment]) -> List[Block]:
    blocks: List[Block] = []
    current: Optional[Block] = None
    for k, seg in enumerate(segments):
        if seg.path == ("pf",) and seg.array:
            current = Block(k)
            blocks.append(current)
        elif current is not None and seg.path[:1] == ("pf",) and len(seg.path) > 1:
            (current.vfs if seg.path == ("pf", "vfs") and seg.array else current.others).append(k)
        else:
            current = None
    return blocks


def _indent_of(segments: List[Segment]) -> Tuple[str, str, bool]:
    """(header indent, key indent, blank line before a group) as the file's [[pf.vfs]] groups are written."""
    for k, seg in enumerate(segments):
        if seg.path == ("pf", "vfs"):
            head, _ = seg.split_tail()
            header = next(line for line in head if _HEADER_RE.match(line))
            keys = [line for line in head[head.index(header) + 1:] if not _QUIET_RE.match(line)]
            indent = header[: len(header) - len(header.lstrip())]
            key_indent = keys[0][: len(keys[0]) - len(keys[0].lstrip())] if keys else indent
            before = segments[k - 1].lines if k else []
            return indent, key_indent, bool(before) and before[-1].strip() == ""
    return "  ", "  ", True


def _toml_value(value: Any) -> str:
    import tomlkit

    return tomlkit.item(value).as_string()


def _edit_table(seg: Segment, changes: Sequence[Tuple[str, Any]]) -> None:
    """Replace, add or remove keys of one segment's table with tomlkit (its other lines are kept)."""
    import tomlkit

    head, tail = seg.split_tail()
    text = "".join(head)
    if head and not head[-1].endswith("\n"):
        text += "\n"
    doc = tomlkit.parse(text)
    if tomlkit.dumps(doc) != text:
        raise EditError(f"cannot edit the table at {'.'.join(seg.path)} in place (tomlkit does not reproduce it); "
                        "edit the file by hand")
    table: Any = doc
    for part in seg.path:
        table = table[part]
        if seg.array and part == seg.path[-1]:
            table = table[0]
    for key, value in changes:
        if value is REMOVE:
            if key in table:
                del table[key]
        else:
            table[key] = value
    seg.lines = tomlkit.dumps(doc).splitlines(keepends=True) + tail


def _group_lines(group: GroupEdit, indent: str, key_indent: str, blank: bool) -> List[str]:
    lines = (["\n"] if blank else []) + [f"{indent}[[pf.vfs]]\n", f"{key_indent}range = {_toml_value(group.range_text)}\n"]
    if group.driver is not None:
        lines.append(f"{key_indent}driver = {_toml_value(group.driver)}\n")
    return lines


def _indices(text: Any) -> Optional[Tuple[int, ...]]:
    try:
        return parse_range(text) if isinstance(text, str) else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------- edits on text


def apply_edit(text: str, index: Optional[int], selector: Tuple[str, str], edit: Edit) -> str:
    """The file's text with block `index` (None: a new block selecting `selector`) changed by `edit`."""
    doc = _load(text)
    expected = copy.deepcopy(doc)
    preamble, segments = split_segments(text)
    blocks = find_blocks(segments)
    pfs = doc.get("pf", [])
    if pfs and (not isinstance(pfs, list) or len(pfs) != len(blocks)):
        raise EditError("the [[pf]] blocks of this file are written as inline tables (pf = [...]); `set` edits "
                        "[[pf]] tables only: edit the file by hand, or rewrite the blocks as [[pf]] tables")
    indent, key_indent, blank = _indent_of(segments)
    if index is None:
        table: Dict[str, Any] = {selector[0]: selector[1]}
        table.update((k, v) for k, v in edit.keys if v is not REMOVE)
        lines = ["\n", "[[pf]]\n"] + [f"{k} = {_toml_value(v)}\n" for k, v in table.items()]
        for group in edit.groups or ():
            lines += _group_lines(group, indent, key_indent, blank)
        new = text if text.endswith("\n") or not text else text + "\n"
        new = (new or NEW_FILE_HEAD) + "".join(lines)
        if not text:
            expected = {"version": 1}
        groups = [_group_dict(g) for g in edit.groups or ()]
        expected.setdefault("pf", []).append({**table, **({"vfs": groups} if groups else {})})
        return _checked(new, expected)

    block = blocks[index]
    want = expected["pf"][index]
    if edit.keys:
        _edit_table(segments[block.pf], edit.keys)
        for key, value in edit.keys:
            if value is REMOVE:
                want.pop(key, None)
            else:
                want[key] = value
    if edit.groups is not None:
        written = pfs[index].get("vfs", [])
        if written and (not isinstance(written, list) or len(written) != len(block.vfs)):
            raise EditError(f"pf[{index}] writes its VF groups as inline tables (vfs = [...]); `set` edits [[pf.vfs]] "
                            "tables only: edit the file by hand")
        unused = {k: _indices(g.get("range")) if isinstance(g, dict) else None for k, g in enumerate(written)}
        kept: Dict[int, GroupEdit] = {}
        new_groups: List[GroupEdit] = []
        for group in edit.groups:
            same = _indices(group.range_text)
            match = next((k for k, ind in unused.items() if ind is not None and ind == same), None)
            if match is None:
                new_groups.append(group)
            else:
                del unused[match]
                kept[match] = group
        for k, group in kept.items():
            seg = segments[block.vfs[k]]
            _edit_table(seg, [("driver", group.driver if group.driver is not None else REMOVE)])
        want_groups = []
        for k, g in enumerate(written):
            if k in kept:
                g = dict(g)
                if kept[k].driver is None:
                    g.pop("driver", None)
                else:
                    g["driver"] = kept[k].driver
                want_groups.append(g)
        want_groups += [_group_dict(g) for g in new_groups]
        if want_groups:
            want["vfs"] = want_groups
        else:
            want.pop("vfs", None)
        dropped = {block.vfs[k] for k in unused}
        last = max(k for k in block.segments if k not in dropped)
        _, block_tail = segments[block.segments[-1]].split_tail()
        if block.segments[-1] in dropped and not segments[last].split_tail()[1]:
            segments[last].lines += block_tail  # keep the blank lines that separated the block from the next
        if new_groups:
            head, tail = segments[last].split_tail()
            if head and not head[-1].endswith("\n"):
                head[-1] += "\n"
            extra: List[str] = []
            for group in new_groups:
                extra += _group_lines(group, indent, key_indent, blank)
            segments[last].lines = head + extra + tail
        for k in dropped:
            segments[k].lines = []
    return _checked("".join(preamble) + "".join(s.text for s in segments), expected)


def remove_edit(text: str, index: int) -> str:
    doc = _load(text)
    preamble, segments = split_segments(text)
    blocks = find_blocks(segments)
    pfs = doc.get("pf", [])
    if not isinstance(pfs, list) or len(pfs) != len(blocks):
        raise EditError("the [[pf]] blocks of this file are written as inline tables (pf = [...]); `unset` removes "
                        "[[pf]] tables only: edit the file by hand")
    expected = copy.deepcopy(doc)
    del expected["pf"][index]
    if not expected["pf"]:
        del expected["pf"]
    block = blocks[index]
    at_end = block.segments[-1] == len(segments) - 1
    for k in block.segments:
        segments[k].lines = []
    new = "".join(preamble) + "".join(s.text for s in segments)
    if at_end:
        new = new.rstrip("\n") + "\n" if new.strip() else ""
    return _checked(new, expected)


def _group_dict(group: GroupEdit) -> Dict[str, Any]:
    return {"range": group.range_text, **({"driver": group.driver} if group.driver is not None else {})}


def _load(text: str) -> Dict[str, Any]:
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise EditError(f"the file is not valid TOML ({exc}); fix it first (sriov-node validate says where)")


def _checked(new: str, expected: Dict[str, Any]) -> str:
    try:
        got = tomllib.loads(new)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise EditError(f"the edited file would not be valid TOML ({exc}); the file is left unchanged: "
                        "edit it by hand")
    if got != expected:
        raise EditError("this file is laid out in a way `set` cannot edit in place without changing other keys; "
                        "the file is left unchanged: edit it by hand")
    return new


# ---------------------------------------------------------------------------- on a host, under a lock


@dataclass(frozen=True)
class EditResult:
    path: str
    before: Optional[bytes]  # None: the file did not exist
    after: bytes
    block: Optional[str]  # "pf[1]", None when nothing selected the PF (unset)
    created: bool = False
    removed: bool = False
    what: str = ""
    backup: Optional[str] = None
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
                "changed": self.changed, "backup": self.backup, "diff": self.diff(), "note": self.note}


class _DirLock:
    """flock on the config's directory: one `set`/`unset` edits the file at a time."""

    def __init__(self, directory: str):
        self.directory = directory
        self.fd: Optional[int] = None

    def __enter__(self) -> "_DirLock":
        try:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            self.fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as exc:
            from sriov_node.errors import describe_os_error

            raise EditError(f"cannot lock {self.directory} to edit the config: {describe_os_error(exc)}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)


def _read(path: str) -> Optional[bytes]:
    """The config's bytes through the config's own reader (None: no file yet, `set` creates it)."""
    try:
        return read_config(path)[0]
    except ConfigError:
        if not os.path.exists(path):
            return None
        raise


def _text(data: Optional[bytes], path: str) -> str:
    """The text to edit, read as every command reads the config (config.decode_config, then TOML).

    A byte-order mark is dropped here and written back by _encode; a file with Windows line ends
    throughout is edited with "\n" and written back with "\r\n" (a mix of both is refused).
    """
    if data is None:
        return ""
    text = decode_config(data, path)
    if "\r\n" in text:
        if text.count("\r\n") != text.count("\n"):
            raise EditError(f"{path} mixes Windows (CRLF) and Unix (LF) line ends; convert it (dos2unix) before "
                            "editing it with `set`")
        text = text.replace("\r\n", "\n")
    parse_toml(text, path)  # not valid TOML: the same error as validate's
    return text


def _encode(text: str, before: Optional[bytes]) -> bytes:
    """The edited text in the file's own form: its byte-order mark and its line ends kept."""
    if before is not None and b"\r\n" in before:
        text = text.replace("\n", "\r\n")
    return ((BOM if before is not None and before.startswith(BOM.encode()) else "") + text).encode("utf-8")


def _block_of(host: Host, path: str, data: Optional[bytes], ref: PfRef, raw_pfs: List[Any]) -> Optional[int]:
    """The index of the block `ref` means: written literally, else selecting that PF on this host."""
    for i, table in enumerate(raw_pfs):
        if isinstance(table, dict) and ref.same(table.get(ref.kind)):
            return i
    if data is None:
        return None
    try:
        desired = parse_config(data, path)
    except ConfigError:
        return None  # an invalid file: only a literal selector says which block is meant
    from sriov_node.host.observe import observe
    from sriov_node.reconcile import survey

    heads = observe(host, vfs_of=(), macs=ref.kind == "mac", ifnames=[ref.value] if ref.kind == "name" else [])
    pci = next((pf.pci for pf in heads.pfs if ref.is_pf(pf)), None)
    if pci is None:
        return None
    _, resolution = survey(host, desired)
    for target in resolution.targets:
        if target.pf.pci == pci:
            spec = target.spec
            if spec.selector.is_fleet_rule:
                raise EditError(f"PF {target.pf.label} is selected by the fleet rule {spec.key} "
                                f"({spec.selector.describe()}); set edits one PF's own block, and a second block for "
                                f"this PF would clash with the rule: edit {spec.key} in {path} by hand (it applies to "
                                "every PF it selects)")
            return int(spec.key[3:-1])
    return None


def _check_pf_here(host: Host, ref: PfRef, path: str) -> None:
    """Refuse to add a block for a PF this host does not have (a typo would otherwise be saved)."""
    from sriov_node.host.observe import observe
    from sriov_node.resolve import resolve

    spec = PfSpec(key="pf[new]", selector=PfSelector(**{ref.kind: ref.value}), num_vfs=0)
    heads = observe(host, vfs_of=(), macs=ref.kind == "mac", ifnames=[ref.value] if ref.kind == "name" else [],
                    devices=[ref.value] if ref.kind == "pci" else [])
    resolution = resolve(DesiredState(path, b"", 1, (spec,)), heads)
    if resolution.failures:
        raise PfNotHere(f"{ref.text}: {resolution.failures[0].message}; nothing was written")


def _trusted(host: Host, path: str) -> None:
    if host.is_real_root and os.geteuid() == 0:
        try:
            st = os.stat(path)
        except OSError:
            return
        why = check_file_trust(path, st)
        if why:
            raise EditError(f"{path} {why}; nothing was written")


def _commit(path: str, before: Optional[bytes], after: bytes) -> Optional[str]:
    """Replace the file (the old one kept as .bak) unless someone changed it since we read it."""
    from sriov_node.atomic import write_atomic

    if _read(path) != before:
        raise EditError(f"{path} changed while it was being edited; nothing was written: run the command again")
    owner, mode = None, None
    if before is not None:
        st = os.stat(path)
        owner, mode = (st.st_uid, st.st_gid), st.st_mode & 0o7777
    return write_atomic(path, after, mode=mode, owner=owner, backup=before)


def edit_config(host: Host, config: Optional[str], pf: str, edit: Edit) -> EditResult:
    """`sriov-node set`: edit (or add) the PF's block, validate, replace the file; what to apply next."""
    from sriov_node.reconcile import PfOutcome, config_path, survey

    ref = parse_pf(pf)
    path = config_path(host, config)
    _trusted(host, path)
    with _DirLock(os.path.dirname(os.path.abspath(path))):
        before = _read(path)
        text = _text(before, path)
        doc = _load(text) if text else {}
        raw_pfs = doc.get("pf", []) if isinstance(doc.get("pf", []), list) else []
        index = _block_of(host, path, before, ref, raw_pfs)
        if index is None:
            _check_pf_here(host, ref, path)
        new = apply_edit(text, index, (ref.kind, ref.value), edit)
        after = _encode(new, before)
        desired = parse_config(after, path)  # a ConfigError here: exit 2, the file untouched
        block = f"pf[{index if index is not None else len(raw_pfs)}]"
        backup = _commit(path, before, after) if after != before else None
    _, resolution = survey(host, desired)
    only = frozenset(t.pf.pci for t in resolution.targets if t.spec.key == block)
    unresolved = tuple(PfOutcome(f.pf, None, f.key, "failed", error=f"{path}: {f.render()}",
                                 detail={"kind": f.kind, "key": f"{f.key}.{f.attr}" if f.attr else f.key})
                       for f in resolution.failures if f.key == block)
    return EditResult(path, before, after, block, created=index is None, what=edit.describe(), backup=backup,
                      desired=desired, only=only, unresolved=unresolved)


def remove_block(host: Host, config: Optional[str], pf: str) -> EditResult:
    """`sriov-node unset`: remove the PF's block (nothing to remove is not an error)."""
    from sriov_node.reconcile import config_path

    ref = parse_pf(pf)
    path = config_path(host, config)
    _trusted(host, path)
    with _DirLock(os.path.dirname(os.path.abspath(path))):
        before = _read(path)
        if before is None:
            raise EditError(f"{path}: no such file; nothing to remove")
        text = _text(before, path)
        doc = _load(text)
        raw_pfs = doc.get("pf", []) if isinstance(doc.get("pf", []), list) else []
        index = _block_of(host, path, before, ref, raw_pfs)
        if index is None:
            return EditResult(path, before, before, None, note=f"no block selects {ref.text}")
        after = _encode(remove_edit(text, index), before)
        parse_config(after, path)
        backup = _commit(path, before, after)
    return EditResult(path, before, after, f"pf[{index}]", removed=True, backup=backup)
