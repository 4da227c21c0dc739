"""`--help` for a person, over every command: it ends with examples that are real command lines,
options that take a value name it as the docs do (PF, SECONDS, FILE, not TEXT or FLOAT), and
every option and argument says what it is for."""

from __future__ import annotations

import shlex

import pytest
import typer

from sriov_node.cli import register
from sriov_node.cli.app import app
from tests.helpers import run_cli

register([])
ROOT = typer.main.get_command(app)


def commands(group=ROOT, prefix=()):
    for name, command in sorted(getattr(group, "commands", {}).items()):
        if hasattr(command, "commands"):
            yield from commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


COMMANDS = list(commands())
ALL_NAMES = {path for path, _ in COMMANDS}


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_ends_with_examples_of_real_command_lines(path, command):
    result = run_cli(*path, "--help")
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout, result.stdout
    lines = [line.strip() for line in result.stdout.split("Examples:", 1)[1].splitlines() if line.strip()]
    assert len(lines) >= 1 and all(line.startswith(("sriov-node ", "systemctl ")) for line in lines), lines
    mine = [line for line in lines if line.startswith("sriov-node ")]
    assert mine, lines
    for line in mine:
        words = [w for w in shlex.split(line.split("&&")[0].split(";")[0].split("|")[0].split(">")[0])[1:]]
        while words and words[0].startswith("--"):  # global options
            words = words[2:] if words[0] in ("--root", "--config") else words[1:]
        assert tuple(words[:len(path)]) == path or any(tuple(words[:len(p)]) == p for p in ALL_NAMES), line


def named(metavar) -> bool:
    """A value named as the docs name it: SECONDS, KEY=VALUE..., MODEL[:PFS], or choices on|off."""
    return bool(metavar) and (metavar.upper() == metavar or "|" in metavar)


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_is_explained_and_named_as_the_docs_name_it(path, command):
    for param in command.params:
        where = f"{' '.join(path)} {param.opts[0]}"
        if param.param_type_name == "option":
            assert (param.help or "").strip(), f"{where}: no help text"
            if not param.is_flag:
                assert named(param.metavar), f"{where}: metavar {param.metavar!r}"
        else:
            assert named(param.metavar), f"{where}: metavar {param.metavar!r}"
            assert (getattr(param, "help", None) or "").strip(), f"{where}: no help text"


def test_the_global_options_name_their_values():
    text = run_cli("--help").stdout
    assert "--root DIR" in text and "--config PATH" in text and "--version" in text
