"""Text for a person: `status` and plans, with VFs that look alike folded into ranges.

At 64 VFs a line per VF hides the one that differs; here each PF is a header line, then its VFs
grouped by what they show (driver, desired driver, verdict, settings), the groups that differ
first. `--verbose` keeps one line per VF. The JSON output is the full value; this is a view of it.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from sriov_node.model import format_ranges

RED, GREEN, YELLOW, BOLD, RESET = "\033[31m", "\033[32m", "\033[33m", "\033[1m", "\033[0m"


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    stream = stream or sys.stdout
    return "NO_COLOR" not in os.environ and hasattr(stream, "isatty") and stream.isatty()


def _paint(text: str, colour: str, on: bool) -> str:
    return f"{colour}{text}{RESET}" if on and text else text


def fold_names(names: Sequence[Optional[str]]) -> str:
    """['ens1f0v0', 'ens1f0v1', 'ens1f0v2'] -> 'ens1f0v0-2'; anything else: the first, '...'."""
    present = [n for n in names if n]
    if not present:
        return "-"
    if len(present) == 1:
        return present[0]
    parts = [re.match(r"^(.*?)(\d+)$", n) for n in present]
    if all(parts) and len({p.group(1) for p in parts}) == 1:  # type: ignore[union-attr]
        numbers = [int(p.group(2)) for p in parts]  # type: ignore[union-attr]
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))) and len(present) == len(names):
            return f"{parts[0].group(1)}{numbers[0]}-{numbers[-1]}"  # type: ignore[union-attr]
    return f"{present[0]}..{present[-1]}"


def fold_numbers(values: Sequence[Any]) -> str:
    """[12, 13, 14] (or their strings) -> '12-14'."""
    present = [int(v) for v in values if v is not None and str(v).isdigit()]
    if not present:
        return ""
    if len(present) == len(values) and present == list(range(present[0], present[0] + len(present))):
        return str(present[0]) if len(present) == 1 else f"{present[0]}-{present[-1]}"
    return format_ranges(sorted(set(present)))


def _settings_words(vf: Dict[str, Any], alone: bool) -> str:
    """The VF settings the config manages, as they are: 'vlan 100 qos 3 trust on'."""
    wanted = vf.get("desired_settings") or {}
    seen = vf.get("settings")
    if seen is None:  # not read (VFs the next apply makes anew): nothing to say of them, not "not reported"
        return ""
    words = []
    from sriov_node.engine.compare import show_setting

    for attr in wanted:
        if attr == "mac" and not alone:
            continue
        words.append(show_setting(attr, seen.get(attr)))
    return ", ".join(words)


def _verdict(vf: Dict[str, Any]) -> Tuple[str, Optional[bool]]:
    if vf.get("matches") is None:
        return vf.get("note") or "", None
    if vf["matches"]:
        named = vf.get("driver") if vf.get("driver") in (vf.get("default_drivers") or ()) else None
        return f"ok ({vf['desired_driver']}" + (f", {named})" if named else ")"), True
    held = f"; held ({vf.get('held_by')}): " + "; ".join(vf["held"]) if vf.get("held") else ""
    return "DIFFERS: " + "; ".join(vf.get("findings") or []) + held, False


def _vf_signature(vf: Dict[str, Any]) -> Tuple:
    verdict, _ = _verdict(vf)
    settings = _settings_words(vf, alone=False)
    return (vf.get("driver"), verdict, settings, bool(vf.get("netdev")))


def group_vfs(vfs: Sequence[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """Runs of consecutive VFs with the same signature."""
    groups: List[List[Dict[str, Any]]] = []
    for vf in vfs:
        if groups and _vf_signature(groups[-1][-1]) == _vf_signature(vf) \
                and groups[-1][-1]["index"] + 1 == vf["index"]:
            groups[-1].append(vf)
        else:
            groups.append([vf])
    # the groups that differ first: that is what someone reading status at 3 a.m. came for
    return sorted(groups, key=lambda g: 0 if _verdict(g[0])[1] is False else 1)


def _vf_line(group: List[Dict[str, Any]], colour: bool) -> str:
    first, last = group[0], group[-1]
    label = f"vf{first['index']}" if len(group) == 1 else f"vf{first['index']}-{last['index']}"
    where = fold_names([v.get("netdev") for v in group])
    if where == "-":
        numbers = fold_numbers([v.get("iommu_group") for v in group])
        where = f"group {numbers}" if numbers else "-"
    settings = _settings_words(first, alone=len(group) == 1)
    verdict, ok = _verdict(first)
    verdict = _paint(verdict, {True: GREEN, False: RED, None: YELLOW}[ok], colour and bool(verdict))
    return f"  {label:<10} {first.get('driver') or '-':<10} {where:<16} {settings + '  ' if settings else ''}{verdict}".rstrip()


def _pf_line(pf: Dict[str, Any], colour: bool) -> str:
    mark = {None: "", True: "converged", False: "DIFFERS"}[pf["converged"]]
    if pf.get("error"):
        mark = "NOT APPLIED"
    elif pf["converged"] and (pf.get("unjudged") or pf.get("held")):
        held = sum(1 for vf in pf.get("vfs") or () if vf.get("held"))
        mark = ", ".join(["converged"] + ([f"{len(pf['unjudged'])} VF(s) not judged"] if pf.get("unjudged") else [])
                         + ([f"{held} VF(s) held"] if held else []))
    mark = _paint(mark, GREEN if mark.startswith("converged") else RED, colour)
    extra = "".join(f"  {k} {pf[k]}" for k in ("eswitch_mode",) if pf.get(k) is not None) \
        + (f"  mtu {pf['mtu']}" if pf.get("mtu") not in (None, 1500) else "") \
        + (f"  VF GUIDs read from {pf['vf_guids_from'].replace('+', ' and ')}" if pf.get("vf_guids_from") else "")
    return (f"{pf['pci']}  {pf['name'] or '-':<10} {pf['driver'] or 'no driver':<10} "
            f"VFs {pf['num_vfs']}/{pf['total_vfs']}{extra}  {pf['block'] or ''}  {mark}").rstrip()


def _vf_line_verbose(vf: Dict[str, Any], colour: bool) -> str:
    verdict, ok = _verdict(vf)
    verdict = _paint(verdict, {True: GREEN, False: RED, None: YELLOW}[ok], colour and bool(verdict))
    group = f"group {vf['iommu_group']}" if vf.get("iommu_group") is not None else ""
    settings = _settings_words(vf, alone=True)
    return (f"    vf{vf['index']:<4} {vf['pci']}  {vf.get('driver') or '-':<10} {vf.get('netdev') or '-':<14} "
            f"{group:<9} {settings + '  ' if settings else ''}{verdict}").rstrip()


def status_lines(body: Dict[str, Any], *, verbose: bool = False, colour: bool = False) -> List[str]:
    """`sriov-node status` as text; `body` is what `status --json` prints."""
    out: List[str] = []
    pfs = body.get("pfs") or []
    if not pfs:
        out.append("no SR-IOV PFs found" + ("" if body.get("iommu_groups") else "; the IOMMU is off"))
    else:
        verdict = body.get("converged")
        summary = {None: "no config", True: "converged", False: "DIFFERS"}[verdict]
        out.append(_paint(f"{len(pfs)} PF(s): {summary}", BOLD, colour))
    for pf in pfs:
        out.append(_pf_line(pf, colour))
        for line in pf.get("pf_findings") or []:
            out.append(f"    differs: {line}")
        if pf.get("error"):
            out.append(f"    {pf['error']}")
        if verbose:
            out.extend(_vf_line_verbose(vf, colour) for vf in pf["vfs"])
        else:
            out.extend(_vf_line(group, colour) for group in group_vfs(pf["vfs"]))
    shown = {pf["pci"] for pf in pfs}
    for block in body.get("blocks") or []:
        if block.get("pf") not in shown:
            out.append(f"{block['block']}: NOT APPLIED: {block['message']}")
    if body.get("reboot_required"):
        out.append(f"reboot required: {body['reboot_required']}")
    last = body.get("last_apply")
    if last:
        out.append(f"last apply: {last['time']}: {last['result']} ({last['writes']} write(s))")
    return out


def _vf_prefix(text: str, vfs: Sequence[int]) -> str:
    label = f"VF {vfs[0]}" if len(vfs) == 1 else f"VFs {format_ranges(sorted(vfs))}"
    return re.sub(r"^VF \d+", label, text, count=1)


def fold_actions(actions: Iterable[Any]) -> List[str]:
    """Actions as lines, those that differ only in their VF folded into one line per range."""
    entries: List[Tuple[Any, List[int]]] = []  # (a representative action, its VFs)
    index: Dict[Tuple, int] = {}
    for action in actions:
        vf = getattr(action, "vf", None)
        if vf is None:
            entries.append((action, []))
            continue
        key = (type(action),) + tuple((name, getattr(action, name)) for name in action.__dataclass_fields__
                                      if name not in ("vf", "pf"))
        if key not in index:
            index[key] = len(entries)
            entries.append((action, []))
        entries[index[key]][1].append(vf)
    return [_vf_prefix(a.describe(), vfs) if vfs else a.describe() for a, vfs in entries]


def plan_lines(plan: Any, *, verbose: bool = False) -> List[str]:
    """One PF's plan: the differences, then each phase's actions folded by VF range; the clean-up in a line."""
    out = [f"    differs: {f.describe()}" for f in plan.findings] if verbose else \
        [f"    differs: {line}" for line in _fold_findings(plan.findings)]
    for phase, actions in plan.phases:
        if verbose:
            out.extend(f"    [{phase}] {a.describe()}" for a in actions)
        else:
            out.extend(f"    [{phase}] {line}" for line in fold_actions(actions))
    if verbose:
        out.extend(f"    [retry] {line}" for line in retry_lines(plan.actions))
    else:
        line = retry_summary(plan.actions)
        if line:
            out.append(f"    [retry] {line} (--verbose spells them out)")
    if plan.on_failure:
        if verbose:
            out.extend(f"    [if it stops early] {a.describe()}" for a in plan.on_failure)
        else:
            out.append(f"    [if it stops early] {len(plan.on_failure)} clean-up step(s): VFs pinned to their "
                       "drivers, autoprobe restored (--verbose lists them)")
    return out


def retry_lines(actions: Iterable[Any]) -> List[str]:
    """The retry rules the actions carry: the writes the executor may make again within an action,
    beyond the actions listed; one line per kind of action and its rules, its VFs folded
    ('sriov_numvfs 0 -> 4: once more if ...', 'bind_driver VFs 0-3: if a probe raced ...; if ...')."""
    by_rules: Dict[Tuple[str, str], List[Any]] = {}
    for action in actions:
        text = action.retry_text()
        if text:
            by_rules.setdefault((action.op, text), []).append(action)
    out = []
    for (op, text), acts in by_rules.items():
        vfs = [a.vf for a in acts if getattr(a, "vf", None) is not None]
        if vfs:
            label = f"VF {vfs[0]}" if len(vfs) == 1 else f"VFs {format_ranges(sorted(set(vfs)))}"
            out.append(f"{op} {label}: {text}")
        elif op.startswith("set_vf_"):
            out.append(f"VF settings through {acts[0].ifname}: {text}")
        else:
            out.extend(f"{a.describe()}: {text}" for a in acts)
    seen = set()
    return [line for line in out if not (line in seen or seen.add(line))]


def retry_summary(actions: Iterable[Any]) -> str:
    """Every retry rule of a PF's plan in one line, each in a few words with what it is for
    ('sriov_numvfs: once more if 0 VFs after 1 s; bind_driver: unbind a racing driver, ...')."""
    by_op: Dict[str, List[str]] = {}
    for action in actions:
        op = "VF settings" if action.op.startswith("set_vf_") and action.op != "set_vf_mtu" else action.op
        op = "sriov_numvfs" if op == "set_num_vfs" else op
        for rule in action.retries():
            shorts = by_op.setdefault(op, [])
            if rule.short not in shorts:
                shorts.append(rule.short)
    return "; ".join(f"{op}: {', '.join(shorts)}" for op, shorts in by_op.items())


def _fold_findings(findings: Sequence[Any]) -> List[str]:
    """Findings that say the same of several VFs, in one line per range."""
    by_text: Dict[str, List[int]] = {}
    order: List[str] = []
    singles: List[str] = []
    for f in findings:
        vf = getattr(f, "vf", None)
        if vf is None:
            singles.append(f.describe())
            continue
        text = f.describe(where_too=False)
        if text not in by_text:
            by_text[text] = []
            order.append(text)
        by_text[text].append(vf)
    lines = list(singles)
    for text in order:
        vfs = by_text[text]
        label = f"VF {vfs[0]}" if len(vfs) == 1 else f"VFs {format_ranges(sorted(vfs))}"
        lines.append(f"{label}: {text}")
    return lines


def put_back_lines(report: Any) -> List[str]:
    """What a run put back of the values sriov-node set and the config no longer manages (read back),
    and what it did not put back yet (the PF's run did not converge, a VF is in use): the generation
    keeps that for the next run. A dry run's: what the run would put back."""
    if not report.restoring:
        return []
    from sriov_node.engine.preimages import describe

    done, left = (report.restoring, {}) if report.dry_run else (report.restored(), report.unrestored())
    verb = "puts back" if report.dry_run else "put back"
    lines: List[str] = []
    for title, values in ((f"what sriov-node set and the config no longer manages, {verb} as it was found:", done),
                          ("not put back yet (the PF's run did not converge, or a VF is in use; the next run "
                           "puts it back):", left)):
        if values:
            lines.append(title)
            lines += [f"  {line}" for pci, entry in sorted(values.items()) for line in describe(pci, entry)]
    return lines
