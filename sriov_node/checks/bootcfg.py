"""Boot-loader configuration as text: what the next boot's kernel command line will be, and edits.

Debian/Ubuntu: grub-mkconfig sources /etc/default/grub, then /etc/default/grub.d/*.cfg in order,
with /bin/sh, and gives normal entries `${GRUB_CMDLINE_LINUX} ${GRUB_CMDLINE_LINUX_DEFAULT}`.
Those files are shell: this module reads the assignments to the two variables with a small POSIX
shell lexer (quotes, escapes, `$VAR`/`${VAR}`, comments, `export`, compound commands). On Debian
the arguments go into sriov-node's own drop-in (/etc/default/grub.d/99-sriov-node.cfg); in the
other files only a contradicting argument is removed where it stands, keeping every other byte. What it cannot evaluate (an assignment inside `if`,
after `&&`, in a pipeline) it reports instead of guessing.

RHEL/Fedora: Boot Loader Specification entries (/boot/loader/entries/*.conf, `options` line,
`$kernelopts`-style variables from grubenv), and /etc/kernel/cmdline for kernels installed later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from sriov_node.checks import kargs

LINUX = "GRUB_CMDLINE_LINUX"
LINUX_DEFAULT = "GRUB_CMDLINE_LINUX_DEFAULT"
GRUB_VARS = (LINUX, LINUX_DEFAULT)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_OPENERS = {"if", "case", "for", "while", "until", "{"}
_CLOSERS = {"fi", "esac", "done", "}"}
_CONTINUERS = {"then", "else", "do"}
_PLAIN_UNQUOTED = re.compile(r"^[A-Za-z0-9_=.,:/+@%-]*$")


class ShellSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    kind: str  # "lit" (characters), "var" ($NAME), "unknown" ($(...), `...`, ${...} forms)
    start: int  # offsets into the file's text
    end: int
    value: str  # lit: the characters; var: the name; unknown: the raw text

    @property
    def plain(self) -> bool:
        """A literal whose raw text is its value (no escape in between)."""
        return self.kind == "lit" and self.end - self.start == len(self.value)


@dataclass(frozen=True)
class Assignment:
    name: str
    line: int
    start: int  # the value's raw text: text[start:end]
    end: int
    segments: Tuple[Segment, ...]
    conditional: bool  # inside if/case/loops/braces, after && or ||, or in a pipeline

    def raw(self, text: str) -> str:
        return text[self.start:self.end]


# ---------------------------------------------------------------------------- the lexer


def _squote_end(text: str, i: int) -> int:
    """The index of the quote that closes a '...' opened just before i."""
    j = text.find("'", i)
    if j < 0:
        raise ShellSyntaxError("unterminated single quote")
    return j


def _find_close(text: str, i: int, close: str) -> int:
    """Index just past the `close` that ends a construct opened before i (quotes respected)."""
    depth = 1
    opener = "(" if close == ")" else "{"
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = _squote_end(text, i + 1) + 1
            continue
        if c == '"':
            i = _dquote(text, i + 1, [])
            continue
        if c == "`":
            i = _backtick(text, i, [])
            continue
        if c == opener:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ShellSyntaxError(f"unterminated {opener}")


def _backtick(text: str, start: int, segs: List[Segment]) -> int:
    """A command substitution `...` opening at `start`: one unknown segment; the index after it."""
    i, n = start + 1, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "`":
            segs.append(Segment("unknown", start, i + 1, text[start:i + 1]))
            return i + 1
        i += 1
    raise ShellSyntaxError("unterminated backquote")


def _dollar(text: str, i: int, segs: List[Segment]) -> int:
    """A `$` at i: parameter expansion, command or arithmetic substitution, or a literal $."""
    nxt = text[i + 1: i + 2]
    if nxt == "(":
        end = _find_close(text, i + 2, ")")
        segs.append(Segment("unknown", i, end, text[i:end]))
        return end
    if nxt == "{":
        end = _find_close(text, i + 2, "}")
        inner = text[i + 2: end - 1]
        if _NAME.fullmatch(inner):
            segs.append(Segment("var", i, end, inner))
        else:
            segs.append(Segment("unknown", i, end, text[i:end]))
        return end
    m = _NAME.match(text, i + 1)
    if m:
        segs.append(Segment("var", i, m.end(), m.group(0)))
        return m.end()
    if nxt and (nxt.isdigit() or nxt in "@*#?-$!"):
        segs.append(Segment("unknown", i, i + 2, text[i:i + 2]))
        return i + 2
    segs.append(Segment("lit", i, i + 1, "$"))
    return i + 1


def _dquote(text: str, i: int, segs: List[Segment]) -> int:
    """Inside "...", from i (after the opening quote); returns the index after the closing one."""
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "\n":
                i += 2
                continue
            if nxt in '$`"\\':
                segs.append(Segment("lit", i, i + 2, nxt))
                i += 2
                continue
            segs.append(Segment("lit", i, i + 1, c))
            i += 1
            continue
        if c == "$":
            i = _dollar(text, i, segs)
            continue
        if c == "`":
            i = _backtick(text, i, segs)
            continue
        segs.append(Segment("lit", i, i + 1, c))
        i += 1
    raise ShellSyntaxError("unterminated double quote")


def _word(text: str, i: int) -> Tuple[int, List[Segment]]:
    segs: List[Segment] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c in " \t\n;&|()<>":
            break
        if c == "\\":
            if text[i + 1: i + 2] == "\n":
                i += 2
                continue
            segs.append(Segment("lit", i, min(i + 2, n), text[i + 1: i + 2]))
            i += 2
            continue
        if c == "'":
            j = _squote_end(text, i + 1)
            segs.extend(Segment("lit", k, k + 1, text[k]) for k in range(i + 1, j))
            i = j + 1
            continue
        if c == '"':
            i = _dquote(text, i + 1, segs)
            continue
        if c == "`":
            i = _backtick(text, i, segs)
            continue
        if c == "$":
            i = _dollar(text, i, segs)
            continue
        segs.append(Segment("lit", i, i + 1, c))
        i += 1
    return i, segs


def _skip_blank(text: str, i: int) -> int:
    n = len(text)
    while i < n:
        if text[i] in " \t\r":
            i += 1
        elif text.startswith("\\\n", i):
            i += 2
        else:
            break
    return i


def _literal(segs: Sequence[Segment]) -> Optional[str]:
    if all(s.kind == "lit" for s in segs):
        return "".join(s.value for s in segs)
    return None


def parse_assignments(text: str) -> Tuple[Assignment, ...]:
    """Every `NAME=value` that the shell would perform, with whether it is conditional.

    Raises ShellSyntaxError on what a shell would reject (an unterminated quote)."""
    found: List[Assignment] = []
    n = len(text)
    i = 0
    depth = 0
    cases = 0
    joined = False  # the previous statement ended with && or || or |
    while i < n:
        i = _skip_blank(text, i)
        if i >= n:
            break
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\n;":
            i += 2 if text.startswith(";;", i) else 1
            joined = False
            continue
        if text.startswith("&&", i) or text.startswith("||", i):
            joined = True
            i += 2
            continue
        if c in "|&":
            joined = c == "|"
            i += 1
            continue
        if c == "(":
            depth += 1
            i += 1
            continue
        if c == ")":
            if not cases:
                depth = max(0, depth - 1)
            i += 1
            continue
        words: List[Tuple[int, int, List[Segment]]] = []
        while True:
            i = _skip_blank(text, i)
            if i >= n or text[i] in "\n;&|()#":  # a # that starts a word starts a comment
                break
            if text[i] in "<>":
                while i < n and text[i] in "<>&":
                    i += 1
                i = _skip_blank(text, i)
                i, _ = _word(text, i)
                continue
            start = i
            i, segs = _word(text, i)
            if i == start:  # nothing consumed: a stray character
                i += 1
                continue
            words.append((start, i, segs))
        after = _skip_blank(text, i)
        chained = joined or text.startswith("&&", after) or text.startswith("||", after) \
            or (text[after:after + 1] == "|")
        joined = False
        while words:
            first = _literal(words[0][2])
            if first in _OPENERS:
                depth += 1
                if first == "case":
                    cases += 1
                words = [] if first != "{" else words[1:]
            elif first in _CLOSERS:
                depth = max(0, depth - 1)
                if first == "esac":
                    cases = max(0, cases - 1)
                words = words[1:]
            elif first in _CONTINUERS:
                words = words[1:]
            elif first == "elif":
                words = []
            else:
                break
        exported = bool(words) and _literal(words[0][2]) in ("export", "readonly")
        candidates = words[1:] if exported else words
        pending: List[Assignment] = []
        command_follows = False
        for start, end, segs in candidates:
            m = _ASSIGN.match(text, start)
            plain_name = m is not None and all(s.kind == "lit" and s.plain for s in segs if s.start < m.end())
            if not plain_name:
                command_follows = not exported
                if command_follows:
                    break
                continue
            value = tuple(s for s in segs if s.start >= m.end())
            pending.append(Assignment(m.group(1), text.count("\n", 0, start) + 1, m.end(), end, value,
                                      depth > 0 or chained))
        if not command_follows:
            found.extend(pending)
    return tuple(found)


# ---------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class GrubSource:
    path: str
    text: str


@dataclass
class GrubEval:
    """The two variables after sourcing the files in order."""

    values: Dict[str, str] = field(default_factory=lambda: {v: "" for v in GRUB_VARS})
    # every assignment whose text ends up in a value: (file index, assignment)
    sources: Dict[str, List[Tuple[int, Assignment]]] = field(default_factory=lambda: {v: [] for v in GRUB_VARS})
    last: Dict[str, Tuple[int, Assignment]] = field(default_factory=dict)
    uncertain: List[str] = field(default_factory=list)  # what could not be evaluated, and where
    unknown: List[str] = field(default_factory=list)  # expansions left out ($(...), other variables)

    @property
    def words(self) -> Tuple[str, ...]:
        """The arguments of a normal boot entry: GRUB_CMDLINE_LINUX then GRUB_CMDLINE_LINUX_DEFAULT."""
        return kargs.split_cmdline(self.values[LINUX]) + kargs.split_cmdline(self.values[LINUX_DEFAULT])

    def contributors(self) -> Set[Tuple[int, int]]:
        return {(idx, a.start) for var in GRUB_VARS for idx, a in self.sources[var]}


def evaluate_grub(sources: Sequence[GrubSource]) -> GrubEval:
    result = GrubEval()
    for idx, src in enumerate(sources):
        try:
            assignments = parse_assignments(src.text)
        except ShellSyntaxError as exc:
            result.uncertain.append(f"{src.path}: {exc} (a shell would refuse the file)")
            continue
        for a in assignments:
            if a.name not in GRUB_VARS:
                continue
            if a.conditional:
                result.uncertain.append(f"{src.path}:{a.line} sets {a.name} conditionally")
                continue
            parts: List[str] = []
            contributing: List[Tuple[int, Assignment]] = [(idx, a)]
            for seg in a.segments:
                if seg.kind == "lit":
                    parts.append(seg.value)
                elif seg.kind == "var" and seg.value in GRUB_VARS:
                    parts.append(result.values[seg.value])
                    contributing += result.sources[seg.value]
                else:
                    result.unknown.append(f"{src.path}:{a.line}: {seg.value if seg.kind == 'unknown' else '$' + seg.value}")
            result.values[a.name] = "".join(parts)
            result.sources[a.name] = contributing
            result.last[a.name] = (idx, a)
    return result


# ---------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class GrubEdit:
    texts: Dict[str, str]  # path -> new text, only files that change
    problem: Optional[str] = None  # why the files were left alone
    words: Tuple[str, ...] = ()  # the next boot's arguments once regenerated


def _plain_runs(a: Assignment) -> List[Tuple[int, int]]:
    runs: List[Tuple[int, int]] = []
    for seg in a.segments:
        if not seg.plain:
            continue
        if runs and runs[-1][1] == seg.start:
            runs[-1] = (runs[-1][0], seg.end)
        else:
            runs.append((seg.start, seg.end))
    return runs


def _word_spans(text: str, a: Assignment, word: str) -> List[Tuple[int, int]]:
    """Where `word` stands as a whole argument inside literal text of the assignment's value."""
    spans = []
    bounds = " \t\n\"'"
    for run_start, run_end in _plain_runs(a):
        pos = text.find(word, run_start, run_end)
        while pos >= 0:
            end = pos + len(word)
            before_ok = pos == a.start or text[pos - 1] in bounds
            after_ok = end == a.end or text[end] in bounds
            if end <= run_end and before_ok and after_ok:
                spans.append((pos, end))
            pos = text.find(word, end, run_end)
    return spans


def _removal(text: str, a: Assignment, start: int, end: int) -> Tuple[int, int]:
    """The span to delete for a word: it and one adjacent blank inside the value."""
    if start > a.start and text[start - 1] in " \t":
        return start - 1, end
    if end < a.end and text[end] in " \t":
        return start, end + 1
    return start, end


def _apply(text: str, edits: List[Tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _append_to_value(text: str, a: Assignment, add: Sequence[str]) -> str:
    raw = a.raw(text)
    words = " ".join(add)
    closing = raw[-1:] in ("\"", "'") and (not a.segments or a.segments[-1].end == a.end - 1)
    if raw == "":
        new = f'"{words}"'
    elif closing:
        body = raw[:-1]
        opened_empty = len(body) == 1  # "" or ''
        sep = "" if opened_empty or body[-1] in " \t" else " "
        new = body + sep + words + raw[-1]
    elif _PLAIN_UNQUOTED.match(raw):
        new = f'"{raw} {words}"'
    else:
        new = f'{raw}" {words}"'
    return text[:a.start] + new + text[a.end:]


def _insert_assignment(text: str, after: Optional[Assignment], add: Sequence[str]) -> str:
    line = f'{LINUX}="{" ".join(add)}"\n'
    if after is not None:
        eol = text.find("\n", after.end)
        if eol >= 0:
            return text[:eol + 1] + line + text[eol + 1:]
        return text + "\n" + line
    if text and not text.endswith("\n"):
        text += "\n"
    return text + line


DROPIN_HEADER = """\
# Written by sriov-node check --fix: the kernel arguments vfio-pci needs (IOMMU on, passthrough).
# grub-mkconfig (update-grub) sources /etc/default/grub, then /etc/default/grub.d/*.cfg in order:
# this file appends to GRUB_CMDLINE_LINUX after the files before it (50-cloudimg-settings.cfg ...).
# To undo: delete this file, then run update-grub. sriov-node rewrites it only when the next boot
# lacks the arguments.
"""


def dropin_text(add: Sequence[str]) -> str:
    """sriov-node's own grub.d file: GRUB_CMDLINE_LINUX as the files before it left it, then `add`."""
    return DROPIN_HEADER + f'{LINUX}="${{{LINUX}}} {" ".join(add)}"\n'


def with_dropin(sources: Sequence[GrubSource], dropin: str, text: Optional[str]) -> List[GrubSource]:
    """The sources as grub-mkconfig would source them with the drop-in `dropin` holding `text`
    (None: without it): /etc/default/grub first, then the grub.d files in name order."""
    rest = [s for s in sources if s.path != dropin]
    if text is None:
        return rest
    directory, _, name = dropin.rpartition("/")
    at = next((i for i, s in enumerate(rest) if s.path.rpartition("/")[0] == directory
               and s.path.rpartition("/")[2] > name), len(rest))
    return rest[:at] + [GrubSource(dropin, text)] + rest[at:]


def _removals(sources: Sequence[GrubSource], live: Set[Tuple[int, int]]) -> List[str]:
    """The texts with every contradicting argument removed where it stands (in the assignments
    that reach the boot entries), and nothing else changed."""
    texts = []
    for idx, src in enumerate(sources):
        edits: List[Tuple[int, int, str]] = []
        for a in parse_assignments(src.text):
            if a.name not in GRUB_VARS or (idx, a.start) not in live:
                continue
            for word in kargs.CONTRADICTING:
                edits += [(*_removal(src.text, a, start, end), "") for start, end in _word_spans(src.text, a, word)]
        texts.append(_apply(src.text, edits))
    return texts


def _overrider(ev: GrubEval, sources: Sequence[GrubSource], dropin: str) -> str:
    last = ev.last.get(LINUX)
    if last is not None and sources[last[0]].path != dropin:
        return f" ({sources[last[0]].path}:{last[1].line} sets {LINUX} after {dropin})"
    return ""


def edit_grub_dropin(sources: Sequence[GrubSource], needed: Sequence[str], dropin: str) -> GrubEdit:
    """Debian's way (grub-mkconfig sources /etc/default/grub.d/*.cfg after /etc/default/grub):
    the arguments go into sriov-node's own drop-in `dropin` (appended to GRUB_CMDLINE_LINUX);
    the contradicting ones are removed where they stand, the only edit of other files. The drop-in
    is written only when the next boot lacks the arguments with it as it is (a re-run writes nothing)."""
    before = evaluate_grub(sources)
    if before.uncertain:
        return GrubEdit({}, "cannot evaluate " + "; ".join(before.uncertain) + ": edit it by hand")
    texts = _removals(sources, before.contributors())
    current = [GrubSource(s.path, t) for s, t in zip(sources, texts)]
    now = evaluate_grub(current)
    if kargs.wants_change(now.words, needed):
        theirs = evaluate_grub(with_dropin(current, dropin, None))
        add = kargs.missing(theirs.words, needed) or tuple(needed)
        current = with_dropin(current, dropin, dropin_text(add))
        now = evaluate_grub(current)
    left = kargs.missing(now.words, needed) + kargs.contradicting(now.words)
    if left:
        return GrubEdit({}, f"could not make {' '.join(left)} right in {', '.join(s.path for s in current)}"
                            f"{_overrider(now, current, dropin)} (an argument built by an expansion sriov-node "
                            "does not edit, or a file sourced after its drop-in): edit it by hand", now.words)
    old = {s.path: s.text for s in sources}
    return GrubEdit({s.path: s.text for s in current if old.get(s.path) != s.text}, None, now.words)


def edit_grub(sources: Sequence[GrubSource], needed: Sequence[str]) -> GrubEdit:
    """In place (where /etc/default/grub.d is not sourced: RHEL's grub2-mkconfig): ensure `needed`
    and drop the contradicting arguments in the files grub-mkconfig sources (sources[0] is
    /etc/default/grub). Edits only the assignments that reach the boot entries; arguments are
    added to the last assignment of GRUB_CMDLINE_LINUX (or a new one)."""
    before = evaluate_grub(sources)
    if before.uncertain:
        return GrubEdit({}, "cannot evaluate " + "; ".join(before.uncertain) + ": edit it by hand")
    texts = [s.text for s in sources]
    target = before.last.get(LINUX)
    effective = before.words
    placed: Set[str] = set()
    live = before.contributors()
    for idx, src in enumerate(sources):
        edits: List[Tuple[int, int, str]] = []
        for a in parse_assignments(src.text):
            if a.name not in GRUB_VARS or (idx, a.start) not in live:
                continue
            is_target = target is not None and target[0] == idx and target[1].start == a.start
            for word in kargs.CONTRADICTING:
                for start, end in _word_spans(src.text, a, word):
                    sub = kargs.REPLACES.get(word)
                    if is_target and sub in needed and sub not in placed and sub not in effective:
                        edits.append((start, end, sub))
                        placed.add(sub)
                    else:
                        edits.append((*_removal(src.text, a, start, end), ""))
        texts[idx] = _apply(texts[idx], edits)
    current = [GrubSource(s.path, t) for s, t in zip(sources, texts)]
    middle = evaluate_grub(current)
    add = kargs.missing(middle.words, needed)
    if add:
        last = middle.last.get(LINUX)
        if last is not None:
            idx, a = last
            texts[idx] = _append_to_value(texts[idx], a, add)
        else:
            anchor = next((a for a in reversed(parse_assignments(texts[0]))
                           if a.name == LINUX_DEFAULT and not a.conditional), None)
            texts[0] = _insert_assignment(texts[0], anchor, add)
    after = evaluate_grub([GrubSource(s.path, t) for s, t in zip(sources, texts)])
    left = kargs.missing(after.words, needed) + kargs.contradicting(after.words)
    changed = {s.path: t for s, t in zip(sources, texts) if t != s.text}
    if left:
        return GrubEdit({}, f"could not make {' '.join(left)} right in {', '.join(s.path for s in sources)} "
                            "(an argument built by an expansion sriov-node does not edit): edit it by hand",
                        after.words)
    return GrubEdit(changed, None, after.words)


# ---------------------------------------------------------------------------- BLS, grubenv, grub.cfg


def parse_bls(text: str) -> Dict[str, str]:
    """`key value` lines of a Boot Loader Specification entry (the first of each key)."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if "\t" in key:
            key, _, rest = key.partition("\t")
            value = rest + " " + value
        fields.setdefault(key, value.strip())
    return fields


def parse_grubenv(text: str) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        env[key] = value
    return env


def expand_grub_vars(text: str, env: Dict[str, str]) -> str:
    """$name and ${name} as GRUB expands them in a BLS `options` line (unset: empty)."""
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  lambda m: env.get(m.group(1) or m.group(2), ""), text)


def version_key(name: str) -> Tuple:
    """Natural order (as `ls -v`): digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


@dataclass(frozen=True)
class BlsEntry:
    path: str
    fields: Dict[str, str]
    words: Tuple[str, ...]  # the options, variables expanded

    @property
    def id(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        return name[:-5] if name.endswith(".conf") else name

    @property
    def title(self) -> str:
        return self.fields.get("title", self.id)


def bls_entries(files: Sequence[Tuple[str, str]], env: Dict[str, str]) -> Tuple[BlsEntry, ...]:
    """The entries in boot-menu order (newest version first, as grub's blscfg and grubby sort)."""
    entries = []
    for path, text in files:
        fields = parse_bls(text)
        entries.append(BlsEntry(path, fields, kargs.split_cmdline(expand_grub_vars(fields.get("options", ""), env))))
    return tuple(sorted(entries, key=lambda e: version_key(e.id), reverse=True))


def default_bls(entries: Sequence[BlsEntry], env: Dict[str, str]) -> Optional[BlsEntry]:
    """The entry the next boot starts: grubenv's saved_entry (id or title), else the first."""
    if not entries:
        return None
    saved = env.get("saved_entry", "").strip()
    if saved:
        for e in entries:
            if saved in (e.id, e.title):
                return e
        if saved.isdigit() and int(saved) < len(entries):
            return entries[int(saved)]
    return entries[0]


_LINUX_LINE = re.compile(r"^\s*linux(?:16|efi)?\s+(\S+)(.*)$")


def grub_cfg_first_entry(text: str) -> Optional[Tuple[str, Tuple[str, ...]]]:
    """(kernel, arguments) of the first `linux` line of a generated grub.cfg (the default entry
    with GRUB_DEFAULT=0)."""
    for line in text.splitlines():
        m = _LINUX_LINE.match(line)
        if m:
            return m.group(1), kargs.split_cmdline(m.group(2))
    return None
