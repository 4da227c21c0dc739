"""Block surgery on the config's TOML text, for `sriov-node set` and `unset`: pure functions of text, no host, no I/O.

The file is cut into segments at its table headers; the comment lines right above a header belong
to it. A `[[pf]]` block is its `[[pf]]` segment and the `[[pf.vfs]]` segments after it. Untouched
segments are copied byte for byte; inside the segments that change, tomlkit replaces, adds or
removes keys and keeps the rest of their lines (comments, spacing, quoting). The result must
parse to exactly the document asked for (the old one with this edit), else the edit is refused.
Which block to edit, the schema, the apply and the save are `authoring.transaction`'s.

What `set` changes: the PF's keys (`num_vfs=8`, `mtu=`, ...), the VF layout (`vfs=0-3:vfio-pci
vfs=4-7:iavf`, the whole list of groups), and any key of a group (`vfs[4-7].vlan=100`: the group
of exactly VFs 4-7). A layout never drops a group's other keys silently (see `_layout`).
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node.config import VF_KEYS, parse_range
from sriov_node.errors import EXIT_INVALID, SriovNodeError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

# The [[pf]] keys `set` may change (the selector is the PF argument itself; VF groups go through vfs= and vfs[R].KEY=).
SETTABLE = ("num_vfs", "mtu", "eswitch_mode", "drivers_autoprobe", "externally_managed", "representor_name")
SELECTOR_KEYS = ("name", "pci", "mac", "vendor", "device", "index")
# The keys of a [[pf.vfs]] group `vfs[RANGE].KEY=` sets: every one but the range (the subscript).
GROUP_KEYS = tuple(k for k in VF_KEYS if k != "range")
LAYOUT_KEYS = ("range", "driver")  # what `vfs=RANGE[:DRIVER]` itself says of a group
# How a command-line value is typed (the schema then checks it): integers and booleans as TOML
# reads them; every other key takes the text as it is (a resource "1234" stays a string).
_INTEGER_KEYS = frozenset({"num_vfs", "mtu", "vlan", "qos", "min_tx_rate", "max_tx_rate"})
_BOOLEAN_KEYS = frozenset({"drivers_autoprobe", "externally_managed", "spoofchk", "trust", "rdma", "vhost_net",
                           "exclude_topology"})
REMOVE = object()  # KEY= : drop the key
_GROUP_KEY_RE = re.compile(r"^vfs\[([^\[\]]*)\](?:\.([A-Za-z_]+))?\Z")

_HEADER_RE = re.compile(r"^[ \t]*(\[\[?)([^\[\]\n]*?)(\]\]?)[ \t]*(#.*)?\r?\n?\Z")
_COMMENT_RE = re.compile(r"^[ \t]*#")
_QUIET_RE = re.compile(r"^[ \t]*(#.*)?\r?\n?\Z")  # blank or comment-only
NEW_FILE_HEAD = ("# sriov-node desired state. `sriov-node validate` checks it; `sriov-node apply` converges to it.\n"
                 "version = 1\n")


class EditError(SriovNodeError):
    """The edit is refused; the file is left as it was."""

    exit_code = EXIT_INVALID



# ---------------------------------------------------------------------------- what to change


@dataclass(frozen=True)
class GroupEdit:
    range_text: str
    driver: Optional[str]  # None: the kernel's default (no driver key)


@dataclass(frozen=True)
class GroupKeyEdit:
    """`vfs[RANGE].KEY=VALUE` (value REMOVE: `vfs[RANGE].KEY=`); key None: `unset PF vfs[RANGE]`, the whole group."""

    range_text: str
    indices: Tuple[int, ...]
    key: Optional[str]
    value: Any

    def describe(self) -> str:
        name = f"vfs[{self.range_text}]" + (f".{self.key}" if self.key else "")
        return f"{name} removed" if self.value is REMOVE else f"{name} = {_show(self.value)}"


@dataclass(frozen=True)
class Edit:
    keys: Tuple[Tuple[str, Any], ...] = ()  # (key, value or REMOVE), in the order given
    groups: Optional[Tuple[GroupEdit, ...]] = None  # None: leave the VF layout alone; (): no groups
    group_keys: Tuple[GroupKeyEdit, ...] = ()  # applied to the layout after `groups`
    drop_keys: bool = False  # `unset PF vfs`: the groups go with every key they have

    def describe(self) -> str:
        parts = [f"{k} removed" if v is REMOVE else f"{k} = {_show(v)}" for k, v in self.keys]
        if self.drop_keys:
            parts.append("vfs removed")
        elif self.groups is not None:
            parts.append("vfs = [" + ", ".join(f"{g.range_text} {g.driver or 'default driver'}"
                                               for g in self.groups) + "]")
        parts += [g.describe() for g in self.group_keys]
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


def _value(key: str, text: str) -> Any:
    """The value of KEY=TEXT: typed by the key (the schema says what is wrong with a wrong one)."""
    if key in _INTEGER_KEYS or key in _BOOLEAN_KEYS:
        return _literal(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        quoted = _literal(text)  # a TOML string written with its quotes
        return quoted if isinstance(quoted, str) else text
    return text


def _range_of(text: str, arg: str) -> Tuple[int, ...]:
    try:
        return parse_range(text)
    except ValueError as exc:
        raise UsageError(f"{arg!r}: the VF range {text!r} {exc}; write e.g. vfs[0-3].vlan=100 or vfs[0,2,4-6].trust=true")


def parse_assignments(args: Sequence[str], *, unset: bool = False) -> Edit:
    """`num_vfs=8 vfs=0-3:vfio-pci vfs=4-7:iavf vfs[4-7].vlan=100 mtu=` -> Edit. Raises UsageError (exit 2).

    unset: the arguments are KEYs (`mtu`, `vfs[0-3].vlan`, `vfs[0-3]`, `vfs`), each removed.
    """
    keys: Dict[str, Any] = {}
    groups: Optional[List[GroupEdit]] = None
    group_keys: List[GroupKeyEdit] = []
    seen: Dict[Tuple[Tuple[int, ...], Optional[str]], str] = {}
    cleared = drop = False
    for arg in args:
        if unset:
            if "=" in arg:
                raise UsageError(f"{arg!r}: unset takes KEYs without values (e.g. mtu or vfs[0-3].vlan); "
                                 "to give a value, use sriov-node set")
            key, sep, value = arg.strip(), "=", ""
        else:
            key, sep, value = arg.partition("=")
            key = key.strip()
        if not sep or not key:
            raise UsageError(f"{arg!r}: write KEY=VALUE, e.g. num_vfs=8, vfs=0-3:vfio-pci or vfs[0-3].vlan=100")
        m = _GROUP_KEY_RE.match(key)
        if m:
            rng, gkey = m.group(1).strip(), m.group(2)
            if gkey is None and not unset:
                raise UsageError(f"{arg!r}: name a key of the group, e.g. vfs[{rng}].vlan=100 (a group's driver: "
                                 f"vfs[{rng}].driver=vfio-pci; to remove the group: sriov-node unset PF 'vfs[{rng}]')")
            if gkey is not None and gkey not in GROUP_KEYS:
                raise UsageError(f"{arg!r}: a VF group has no key {gkey!r}; it has {', '.join(GROUP_KEYS)} "
                                 "(and its range, the part in brackets)")
            indices = _range_of(rng, arg)
            if (indices, gkey) in seen:
                raise UsageError(f"{arg!r} and {seen[(indices, gkey)]!r} name the same thing; give it once")
            seen[(indices, gkey)] = arg
            text = value.strip()
            group_keys.append(GroupKeyEdit(rng, indices, gkey, REMOVE if text == "" else _value(gkey or "", text)))
            continue
        if key == "vfs":
            if unset:
                groups, drop = [], True
                continue
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
            raise UsageError(f"{key!r}: " + (
                f"a VF group's key: write vfs[RANGE].{key}=..., e.g. vfs[0-3].{key}=..." if key in GROUP_KEYS else
                f"set changes the PF's {', '.join(SETTABLE)}, the VF layout vfs=RANGE[:DRIVER] and a group's keys "
                f"vfs[RANGE].KEY=VALUE ({', '.join(GROUP_KEYS)})"))
        if key in keys:
            raise UsageError(f"{key} is given twice")
        keys[key] = REMOVE if value.strip() == "" else _value(key, value.strip())
    if not keys and groups is None and not group_keys:
        raise UsageError("nothing to " + ("unset; e.g. mtu or 'vfs[0-3].vlan'" if unset else
                                          "set; e.g. num_vfs=8 vfs=0-3:vfio-pci vfs=4-7:iavf 'vfs[4-7].vlan=100'"))
    return Edit(tuple(keys.items()), tuple(groups) if groups is not None else None, tuple(group_keys), drop)


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


def _group_lines(table: Dict[str, Any], indent: str, key_indent: str, blank: bool) -> List[str]:
    """A new [[pf.vfs]] table: range, driver, then its other keys in the order given."""
    lines = (["\n"] if blank else []) + [f"{indent}[[pf.vfs]]\n"]
    lines += [f"{key_indent}{k} = {_toml_value(v)}\n" for k, v in table.items()]
    return lines


def _indices(text: Any) -> Optional[Tuple[int, ...]]:
    try:
        return parse_range(text) if isinstance(text, str) else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------- edits on text


@dataclass
class _Slot:
    """One VF group of the edited block: an old one (its index among the block's groups) or a new one."""

    old: Optional[int]
    indices: Optional[Tuple[int, ...]]
    table: Dict[str, Any]
    changes: List[Tuple[str, Any]] = field(default_factory=list)  # for an old group's table


def _layout(written: List[Any], edit: Edit, block: str) -> Tuple[List[_Slot], List[int]]:
    """The block's VF groups after `edit`: (the groups in file order, the old groups dropped).

    `vfs=RANGE[:DRIVER]` lays the groups out anew: an old group whose VFs are exactly a new
    group's keeps all its keys (with the driver given); the others go. A key of a group that goes
    (anything but its range and driver) is never lost silently: the edit must say it again for
    the new groups that hold those VFs (vfs[R].KEY=VALUE), or drop it (vfs[OLD].KEY=), else it is
    refused with the keys, the groups and both spellings. `vfs[R].KEY=` edits the group of exactly
    those VFs; a range that is no group makes a new group when no group holds any of its VFs.
    """
    olds = [(k, _indices(g.get("range")) if isinstance(g, dict) else None, g) for k, g in enumerate(written)]
    if edit.groups is None:
        slots = [_Slot(k, ind, dict(g)) for k, ind, g in olds]
        gone: List[int] = []
    else:
        unused = {k: ind for k, ind, _ in olds}
        kept: List[_Slot] = []
        new: List[_Slot] = []
        for group in edit.groups:
            ind = _indices(group.range_text)
            match = next((k for k, have in unused.items() if have is not None and have == ind), None)
            table: Dict[str, Any]
            if match is None:
                table = {"range": group.range_text}
                if group.driver is not None:
                    table["driver"] = group.driver
                new.append(_Slot(None, ind, table))
                continue
            del unused[match]
            table = dict(written[match])
            slot = _Slot(match, ind, table)
            slot.changes.append(("driver", group.driver if group.driver is not None else REMOVE))
            _change(table, "driver", slot.changes[-1][1])
            kept.append(slot)
        slots = sorted(kept, key=lambda s: s.old or 0) + new
        gone = sorted(unused)
    acknowledged: Dict[int, set] = {}  # old group -> keys the edit says it may lose
    for gk in edit.group_keys:
        slot = next((s for s in slots if s.indices == gk.indices), None)
        if gk.key is None:  # unset PF vfs[R]: the group goes, with its keys
            if slot is not None:
                slots.remove(slot)
                if slot.old is not None:
                    gone.append(slot.old)
                    acknowledged[slot.old] = set(slot.table)
            continue
        if slot is None:
            if gk.value is REMOVE:  # nothing to remove here; maybe the drop of a replaced group's key
                for k in gone:
                    if olds[k][1] == gk.indices:
                        acknowledged.setdefault(k, set()).add(gk.key)
                continue
            overlap = [s for s in slots if s.indices and set(s.indices) & set(gk.indices)]
            if overlap:
                raise EditError(
                    f"vfs[{gk.range_text}].{gk.key}: VFs {gk.range_text} are no group of {block}, and they share VFs "
                    "with " + ", ".join(f"the group {s.table.get('range')!r}" for s in overlap)
                    + f"; name a whole group's range (vfs[{overlap[0].table.get('range')}].{gk.key}=...), or lay the "
                    f"groups out again in the same command (vfs=RANGE[:DRIVER] ... vfs[{gk.range_text}].{gk.key}=...)")
            slot = _Slot(None, gk.indices, {"range": gk.range_text})
            slots.append(slot)
        if slot.old is not None:
            slot.changes.append((gk.key, gk.value))
        _change(slot.table, gk.key, gk.value)
    if not edit.drop_keys:
        _refuse_losses(written, olds, gone, acknowledged, slots, edit, block)
    return slots, sorted(set(gone))


def _change(table: Dict[str, Any], key: str, value: Any) -> None:
    if value is REMOVE:
        table.pop(key, None)
    else:
        table[key] = value


def _refuse_losses(written: List[Any], olds: List[Tuple[int, Optional[Tuple[int, ...]], Any]], gone: List[int],
                   acknowledged: Dict[int, set], slots: List[_Slot], edit: Edit, block: str) -> None:
    said = [(set(gk.indices), gk.key) for gk in edit.group_keys if gk.key is not None]
    lost_lines: List[str] = []
    keep: List[str] = []
    drop: List[str] = []
    for k in gone:
        g = written[k]
        if not isinstance(g, dict):
            continue
        vfs = set(olds[k][1] or ())
        lost = [key for key in g if key not in LAYOUT_KEYS and key not in acknowledged.get(k, set())
                and not any(key == sk and vfs & si for si, sk in said)]
        if not lost:
            continue
        rng = g.get("range")
        lost_lines.append(f"  {block}.vfs[{k}] (range {_toml_value(rng)}): "
                          + ", ".join(f"{key} = {_toml_value(g[key])}" for key in lost))
        holders = [s for s in slots if s.indices and vfs & set(s.indices)]
        for s in holders:
            keep += [f"vfs[{s.table['range']}].{key}={_show(g[key])}" for key in lost]
        drop += [f"vfs[{rng}].{key}=" for key in lost]
    if not lost_lines:
        return
    layout = ("vfs= (no groups)" if not edit.groups else " ".join(f"vfs={g.range_text}" + (f":{g.driver}" if g.driver else "")
                                                                  for g in edit.groups))
    raise EditError("\n".join(
        [f"{layout} replaces VF groups of {block} whose keys would be lost (only a group whose VFs are exactly a new "
         "group's keeps its keys):"] + lost_lines
        + ([f"to keep them for the new groups holding those VFs, add: {' '.join(dict.fromkeys(keep))}"] if keep else [])
        + [f"to drop them, add: {' '.join(dict.fromkeys(drop))}", "nothing was written"]))


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
    touches_groups = edit.groups is not None or bool(edit.group_keys)
    if index is None:
        block_name = f"pf[{len(pfs) if isinstance(pfs, list) else 0}]"
        table: Dict[str, Any] = {selector[0]: selector[1]}
        table.update((k, v) for k, v in edit.keys if v is not REMOVE)
        slots, _ = _layout([], edit, block_name) if touches_groups else ([], [])
        lines = ["\n", "[[pf]]\n"] + [f"{k} = {_toml_value(v)}\n" for k, v in table.items()]
        for slot in slots:
            lines += _group_lines(slot.table, indent, key_indent, blank)
        new = text.rstrip("\r\n\t ") + "\n" if text.strip() else ""  # one blank line before the block, however the file ended
        new = (new or NEW_FILE_HEAD) + "".join(lines)
        if not text.strip():
            expected = {"version": 1}
        groups = [slot.table for slot in slots]
        expected.setdefault("pf", []).append({**table, **({"vfs": groups} if groups else {})})
        return _checked(new, expected)

    block = blocks[index]
    block_name = f"pf[{index}]"
    want = expected["pf"][index]
    if edit.keys:
        _edit_table(segments[block.pf], edit.keys)
        for key, value in edit.keys:
            _change(want, key, value)
    if touches_groups:
        written = pfs[index].get("vfs", [])
        if written and (not isinstance(written, list) or len(written) != len(block.vfs)):
            raise EditError(f"{block_name} writes its VF groups as inline tables (vfs = [...]); `set` edits [[pf.vfs]] "
                            "tables only: edit the file by hand")
        slots, gone = _layout(list(written), edit, block_name)
        for slot in slots:
            if slot.old is not None and slot.changes:
                _edit_table(segments[block.vfs[slot.old]], slot.changes)
        new_slots = [s for s in slots if s.old is None]
        if slots:
            want["vfs"] = [s.table for s in slots]
        else:
            want.pop("vfs", None)
        dropped = {block.vfs[k] for k in gone}
        last = max(k for k in block.segments if k not in dropped)
        if last != block.segments[-1] or new_slots:
            # The block now ends with `last` (its groups after it dropped) and/or new groups: whatever
            # it ends with is followed by the lines that separated the block from what comes next
            # (nothing at the end of the file), never also by the blank lines that separated `last`
            # from a dropped group: repeated edits keep the file's blank lines as they are.
            _, block_tail = segments[block.segments[-1]].split_tail()
            head, tail = segments[last].split_tail()
            if last != block.segments[-1]:
                while tail and not tail[-1].strip():
                    tail = tail[:-1]  # comment lines stay; the blank lines before the dropped group go
                tail = tail + block_tail
            if head and not head[-1].endswith("\n"):
                head[-1] += "\n"
            extra: List[str] = []
            for slot in new_slots:
                extra += _group_lines(slot.table, indent, key_indent, blank)
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
