#!/usr/bin/env python3
"""Write the man pages from the sources they describe, so that they cannot drift from them.

  scripts/manpages.py OUTDIR     writes OUTDIR/sriov-node.8 and OUTDIR/sriov-node.toml.5

sriov-node(8) is built from the CLI itself (every command, argument and option with its help
text, as `--help` prints it); sriov-node.toml(5) from docs/config-reference.md, the page a test
holds to the config schema key by key. The Debian package builds them with this script. The
markdown tables of the reference become tbl(1) tables (the page starts with the `'\\" t` line that
asks man(1) for tbl), its key tables lists of keys; tests/test_newcomer.py lints both pages with
`mandoc -T lint` and reads the tables as man renders them, tests/test_package.py the packaged pages.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Iterable, List

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WIDTH = 80  # input lines longer than this are wrapped (mandoc -T lint's style rule); roff fills them again


def _date() -> str:
    """The newest debian/changelog entry's date (YYYY-MM-DD): fixed per release, so builds are reproducible."""
    import email.utils

    try:
        for line in (REPO / "debian" / "changelog").read_text().splitlines():
            if line.startswith(" -- ") and "  " in line[4:]:
                return email.utils.parsedate_to_datetime(line[4:].split("  ", 1)[1].strip()).strftime("%Y-%m-%d")
    except (OSError, ValueError, TypeError):
        pass
    return "2026-01-01"


DATE = _date()


def roff(text: str, wrap: bool = True) -> str:
    """Plain text (with `code` spans) as roff: escapes, code in bold, no line starting with a dot;
    wrapped at WIDTH unless `wrap` is false (a macro's argument, a tag: one line)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", lambda m: "\\fB" + m.group(1) + "\\fR", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)  # markdown links: their words
    text = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", text)
    lines = []
    for line in text.splitlines():
        parts = textwrap.wrap(line, WIDTH, break_long_words=False, break_on_hyphens=False) if wrap else [line]
        for part in parts or [""]:
            lines.append("\\&" + part if part.startswith((".", "'")) else part)
    return "\n".join(lines)


def _verbatim(text: str) -> str:
    """A line of a code block (no-fill mode: not wrapped): escapes, no line starting with a dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _cells(line: str) -> List[str]:
    """A markdown table row's cells (an escaped pipe, `\\|`, belongs to its cell)."""
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def reference(rows: List[List[str]]) -> List[str]:
    """A key table (key | type | default | meaning) as a list of tagged paragraphs, one per key: its
    meaning, then the other columns named by their headers ("Type: ...", "Default: ..."). Four
    columns with sentences in the last do not fit a terminal's 80 columns as a tbl table."""
    names = [h.strip().capitalize() for h in rows[0]]
    out: List[str] = []
    for row in rows[1:]:
        row = row + [""] * (len(names) - len(row))
        words = " ".join([row[-1]] + [f"{name}: {cell}." for name, cell in zip(names[1:-1], row[1:-1]) if cell])
        out += [".TP", roff(row[0], wrap=False), roff(words)]
    return out


def table(rows: List[List[str]]) -> List[str]:
    """A markdown table (its header row first) as a tbl(1) table: a boxed header in bold. A column of
    short cells (none over SHORT characters) is written as plain entries, so it takes its own width;
    any other column's cells are text blocks (T{ ... T}) that wrap within it, and the column with
    the longest cell takes the width left over (the last one on a tie). Text blocks are filled
    ragged-right: a narrow block cannot always be justified, and troff would warn "cannot adjust
    line" (the driver table's sentences sit in its third column, before "MTU up to")."""
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    longest = [max(len(r[k]) for r in rows) for k in range(width)]
    wide = max(range(width), key=lambda k: (longest[k], k))
    spec = ["lB" for _ in range(width)]
    body = ["lx" if k == wide else "l" for k in range(width)]
    out = [".na", ".TS", "box tab(\t);", " ".join(spec), " ".join(body) + "."]
    for n, row in enumerate(rows):
        out.append("\t".join(roff(cell, wrap=False) if longest[k] <= SHORT and k != wide
                              else "T{\n" + roff(cell) + "\nT}" for k, cell in enumerate(row)))
        if n == 0:
            out.append("_")
    return out + [".TE", ".ad"]


SHORT = 12  # a table column whose cells are all this short is not wrapped


def header(name: str, section: str, title: str) -> List[str]:
    from sriov_node import __version__

    return [f'.TH "{name.upper()}" "{section}" "{DATE}" "sriov-node {__version__}" "{title}"']


def _commands(group, prefix: str = ""):
    for name in sorted(getattr(group, "commands", {})):
        sub = group.commands[name]
        yield prefix + name, sub
        yield from _commands(sub, prefix + name + " ")


def _usage_words(command, ctx) -> str:
    words = []
    for param in command.params:
        if param.param_type_name == "argument":
            metavar = (param.metavar or param.name).upper()
            words.append(f"{metavar}..." if param.nargs == -1 else metavar)
    return " ".join(words)


def _options(command, ctx) -> Iterable[str]:
    for param in command.params:
        record = param.get_help_record(ctx)
        if not record:
            continue
        opts, help_text = record
        if opts in ("--install-completion", "--show-completion"):
            continue
        yield ".TP"
        yield "\\fB" + roff(opts, wrap=False) + "\\fR"
        yield roff(help_text or "")


def sriov_node_8() -> str:
    import typer

    from sriov_node.cli import register
    from sriov_node.cli.app import app

    register([])  # every command module
    root = typer.main.get_command(app)
    root_ctx = typer.Context(root, info_name="sriov-node")
    out = header("sriov-node", "8", "System Administration")
    out += [".SH NAME", "sriov\\-node \\- provision SR\\-IOV Virtual Functions",
            "from a declarative desired state",
            ".SH SYNOPSIS", "\\fBsriov\\-node\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIARGUMENTS\\fR]",
            ".SH DESCRIPTION",
            roff("sriov-node creates SR-IOV Virtual Functions on a Linux node, binds them to the drivers the "
                 "configuration names (`vfio-pci` for DPDK, `iavf`, `mlx5_core`, ...), sets their MAC, VLAN, "
                 "trust, rates and the eswitch mode, from `/etc/sriov-node/config.toml` (see "
                 "`sriov-node.toml(5)`), at every boot and whenever the kernel loses them. \"Converged\" means "
                 "that the kernel, read back, agrees with every part of the desired state."),
            ".PP",
            roff("Two units run it: `sriov-node.service`, a oneshot before `network-pre.target` "
                 "(`sriov-node boot`), and `sriov-node-agent.service`, the udev-driven daemon "
                 "(`sriov-node daemon`). Both do nothing until `/etc/sriov-node/config.toml` exists."),
            ".SH GLOBAL OPTIONS"]
    out += list(_options(root, root_ctx))
    out.append(".SH COMMANDS")
    for name, command in _commands(root):
        if hasattr(command, "commands"):
            continue  # a group: its commands follow
        ctx = typer.Context(command, info_name=name, parent=root_ctx)
        out.append(".SS " + roff(f"sriov-node {name} {_usage_words(command, ctx)}".rstrip(), wrap=False))
        out.append(roff((command.help or "").strip()))
        options = list(_options(command, ctx))
        if options:
            out += [".PP", "Options and arguments:", ".RS"] + options + [".RE"]
    out += [".SH EXIT STATUS",
            ".TP", "\\fB0\\fR", "Success: converged, valid, or nothing to report.",
            ".TP", "\\fB1\\fR", roff("A PF or VF failed, or a block of the config does not fit this host."),
            ".TP", "\\fB2\\fR", roff("The config is invalid, or the command line is wrong; nothing was written."),
            ".TP", "\\fB3\\fR", roff("Refused: VFs in use (a VM or pod holds them; `--force`), or a prerequisite is missing."),
            ".TP", "\\fB130\\fR, \\fB143\\fR", roff("Stopped by SIGINT or SIGTERM (the plan's clean-up ran)."),
            ".SH ENVIRONMENT",
            ".TP", "\\fBSRIOV_NODE_ROOT\\fR", roff("As `--root`."),
            ".TP", "\\fBSRIOV_NODE_CONFIG\\fR", roff("As `--config`."),
            ".TP", "\\fBNO_COLOR\\fR", roff("No colour on a terminal."),
            ".SH FILES",
            ".TP", "\\fI/etc/sriov\\-node/config.toml\\fR", roff("The desired state (`sriov-node.toml(5)`)."),
            ".TP", "\\fI/var/lib/sriov\\-node/\\fR", roff("The last run's record and the applied generations."),
            ".TP", "\\fI/run/sriov\\-node/\\fR", roff("The lock every run takes, and a pending reboot's marker."),
            ".TP", "\\fI/usr/share/doc/sriov\\-node/examples/\\fR", "Example configurations.",
            ".SH SEE ALSO",
            "\\fBsriov\\-node.toml\\fR(5), \\fBsystemd.service\\fR(5), \\fBudev\\fR(7), \\fBdevlink\\fR(8), \\fBip\\-link\\fR(8)"]
    return "\n".join(out) + "\n"


def sriov_node_toml_5() -> str:
    """docs/config-reference.md as roff: headings, paragraphs, code blocks, tables as tbl(1) tables."""
    out = ["'\\\" t"] + header("sriov-node.toml", "5", "File Formats")  # the first line asks man(1) for tbl
    out += [".SH NAME", "sriov\\-node.toml \\- the desired state of sriov\\-node",
            "(/etc/sriov\\-node/config.toml)"]
    lines = (REPO / "docs" / "config-reference.md").read_text().splitlines()
    in_code = False
    paragraph: List[str] = []
    rows: List[List[str]] = []

    def flush() -> None:
        if paragraph:
            if not out[-1].startswith((".SH", ".SS")):  # a heading starts a paragraph itself
                out.append(".PP")
            out.append(roff(" ".join(paragraph)))
            paragraph.clear()
        if rows:
            out.extend(reference(rows) if rows[0][0] == "key" else table(rows))
            rows.clear()

    for line in lines[1:]:
        if line.startswith("```"):
            flush()
            out.append(".EX" if not in_code else ".EE")
            in_code = not in_code
        elif in_code:
            out.append(_verbatim(line))
        elif line.startswith("## "):
            flush()
            out.append(".SH " + roff(line[3:].upper().replace("`", ""), wrap=False))
        elif line.startswith("### "):
            flush()
            out.append(".SS " + roff(line[4:], wrap=False))
        elif line.startswith("|"):
            if paragraph:
                flush()
            cells = _cells(line)
            if not (rows and set("".join(cells)) <= set("-: ")):  # the rule under the header
                rows.append(cells)
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
    flush()
    out += [".SH SEE ALSO", "\\fBsriov\\-node\\fR(8)"]
    return "\n".join(out) + "\n"


def main(argv: List[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2].strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    outdir = Path(argv[0])
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "sriov-node.8").write_text(sriov_node_8())
    (outdir / "sriov-node.toml.5").write_text(sriov_node_toml_5())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
