"""The hot commands (validate, apply, status, boot, daemon) run without typer: `sriov_node.cli.hot.parse`
accepts exactly the command lines typer accepts with the same values, and hands every other one
(help, completion, bad options) to typer, whose answer (exit 2, click's message) stays the same."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import typer

from sriov_node.cli import hot, register
from sriov_node.cli.app import Options, app
from tests.helpers import run_cli

register([])
ROOT = typer.main.get_command(app)
HOT = ("validate", "apply", "status", "boot", "daemon")

# values for each kind of option: the fast path must take each one as typer takes it, or leave it to typer
FLOATS = ("5", "0.5", "+2", "1e1", " 3 ", "1_0", "0", "-1", "nan", "inf", "-inf", "abc", "", "--json", "-")
PATHS = ("/tmp/r", "", "-", "--json", "a=b")


def click_parse(argv, environ):
    """What typer makes of `argv`: (command, Options, params) as its command hands them to the body
    (sriov_node.cli.hot's, recorded here instead of run), or what it raised (a usage error, Exit)."""
    seen = []
    saved = {k: os.environ.get(k) for k in ("SRIOV_NODE_ROOT", "SRIOV_NODE_CONFIG")}
    bodies = {name: getattr(hot, name) for name in HOT}
    try:
        for k in saved:
            os.environ.pop(k, None)
        os.environ.update(environ)
        for name in HOT:
            setattr(hot, name, lambda opts, _name=name, **params: seen.append((_name, opts, params)))
        try:
            app(args=list(argv), prog_name="sriov-node", standalone_mode=False)
        except (Exception, SystemExit) as exc:  # click's UsageError (vendored or not), typer's Exit, --help
            return exc
    finally:
        for name, fn in bodies.items():
            setattr(hot, name, fn)
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
    return seen[0] if seen else None


def cases():
    """Every option of the hot commands, alone and in pairs, with good and bad values and forms."""
    for command in HOT:
        table = hot.HOT[command]
        words = []
        for opt, (_, takes_value) in table.items():
            if takes_value:
                words += [[opt, v] for v in FLOATS] + [[f"{opt}={v}"] for v in FLOATS] + [[opt]]
            else:
                words += [[opt], [f"{opt}=1"], [opt, opt]]
        words += [["--bogus"], ["-x"], ["-vv"], ["--"], ["--", "x"], ["extra"], ["--root", "/x"], ["--help"], ["-h"],
                  ["--json-only"], ["--dry"]]
        yield [command]
        for w in words:
            yield [command, *w]
        for a, b in itertools.combinations([w for w in words if len(w) == 1 or w[1] in ("5", "0.5")][:14], 2):
            yield [command, *a, *b]
        for g in (["--root", p] for p in PATHS):
            yield [*g, command]
        yield ["--root=/r", "--config", "/c.toml", command, "--timeout", "2"] if "--timeout" in table else [command]
        yield ["--config", "/c.toml", "--root", "/a", "--root", "/b", command]
        yield ["--version", command]
        yield ["--", command, *(["-v"] if "-v" in table else [])]
        yield ["--root", "/r", "--", command, "--"]
        yield ["--", "--root", "/r", command]
        yield ["--root", command]
    yield []
    yield ["--root", "/x"]
    yield ["validate"]
    yield ["sim", "create", "d"]
    yield ["appl"]
    yield ["--install-completion"]


CASES = list(cases())


def test_the_fast_paths_table_is_typers_declaration():
    for command in HOT:
        params = [p for p in ROOT.commands[command].params]
        table = hot.HOT[command]
        assert sorted(table) == sorted(o for p in params for o in (*p.opts, *p.secondary_opts)), command
        for p in params:
            for opt in p.opts:
                assert table[opt] == (p.name, not p.is_flag), (command, opt)
            assert hot.DEFAULTS[command][p.name] == p.default, (command, p.name)
            assert p.is_flag or p.type.name == "float", (command, p.name)  # every value is seconds
            assert not p.multiple and p.nargs == 1 and not p.count and p.envvar is None
    glob = {o: p for p in ROOT.params for o in p.opts}
    for opt, name in hot.GLOBAL.items():
        assert glob[opt].name == name and glob[opt].envvar == hot.ENVVARS[name] and not glob[opt].is_flag


@pytest.mark.parametrize("environ", ({}, {"SRIOV_NODE_ROOT": "/e", "SRIOV_NODE_CONFIG": "/e.toml"}),
                         ids=("no-env", "env"))
def test_the_fast_path_accepts_exactly_what_typer_accepts_with_the_same_values(environ):
    accepted, wrong = 0, []
    for argv in CASES:
        fast = hot.parse(argv, environ)
        typer_said = click_parse(argv, environ)
        if fast is None:  # typer's to answer: help, completion, --version, or an error
            if isinstance(typer_said, tuple) and not _typer_only(argv):
                wrong.append((argv, "left to typer, which accepts it"))
            continue
        accepted += 1
        if fast != typer_said:
            wrong.append((argv, fast, typer_said))
    assert not wrong
    assert accepted > 200


def _typer_only(argv) -> bool:
    """Lines typer accepts that the fast path leaves to it on purpose: a value that starts with '-'."""
    return any(a.startswith("-") and b.startswith("-") and a in ("--root", "--config", *(
        o for t in hot.HOT.values() for o, (_, v) in t.items() if v)) for a, b in zip(argv, argv[1:]))


def test_an_empty_variable_and_completion_are_typers():
    assert hot.parse(["apply"], {"SRIOV_NODE_ROOT": ""}) is None
    assert hot.parse(["apply"], {"_SRIOV_NODE_COMPLETE": "complete_bash"}) is None
    assert hot.parse(["apply"], {}) == ("apply", Options("/", None), hot.DEFAULTS["apply"])


BAD = [["apply", "--bogus"], ["apply", "--timeout", "0"], ["apply", "--timeout"], ["apply", "--dry-run=1"],
       ["status", "extra"], ["status", "-vv", "--x"], ["boot", "--wait", "nan"], ["boot", "--wait", "abc"],
       ["daemon", "--debounce", "-1"], ["daemon", "--timeout=inf"], ["apply", "--root", "/x"], ["daemon", "--", "x"],
       ["--", "--root", "/x", "apply"]]


TYPER_ALONE = ("import sys\nimport sriov_node.cli as cli\nfrom sriov_node.cli import hot\n"
               "hot.parse = lambda *a, **k: None\nsys.argv = ['sriov-node', *sys.argv[1:]]\ncli.main()\n")


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_a_bad_option_of_a_hot_command_gets_typers_exit_2_and_message(argv):
    """The same words on stderr, and exit 2, as typer alone gives (the fast path switched off)."""
    assert hot.parse(argv) is None
    result = run_cli(*argv)
    assert result.returncode == 2 and "Error: " in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    alone = subprocess.run([sys.executable, "-c", TYPER_ALONE, *argv], capture_output=True, text=True, env=env,
                           timeout=60)
    assert (alone.returncode, alone.stdout, alone.stderr) == (2, result.stdout, result.stderr)


def test_validate_apply_status_boot_and_daemon_do_not_import_typer(tmp_path):
    sim = run_cli("sim", "create", str(tmp_path / "h"), "--nic", "e810:1:4")
    assert sim.returncode == 0, sim.stderr
    config = tmp_path / "c.toml"
    config.write_text('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    base = [sys.executable, "-X", "importtime", "-m", "sriov_node", "--root", str(tmp_path / "h"), "--config", str(config)]
    for argv in (["validate"], ["validate", "--json"], ["apply"], ["apply", "--dry-run", "--json"], ["status", "-v"],
                 ["boot", "--wait", "1"]):
        proc = subprocess.run(base + argv, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, (argv, proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
        imported = [line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
        assert "sriov_node.engine.survey" in imported, argv  # the measurement saw the command's own imports
        assert not [m for m in imported if m.split(".")[0] in ("typer", "click")], argv
    daemon = subprocess.Popen(base + ["daemon", "--no-notify"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        imported = []
        for line in daemon.stderr:
            if line.startswith("import time:"):
                imported.append(line.split("|")[-1].strip())
            if "sriov_node.service.daemon" in imported:
                break
    finally:
        daemon.kill()  # only its imports are looked at here (its signals: tests/test_daemon.py)
        daemon.communicate(timeout=60)
    assert "sriov_node.service.daemon" in imported
    assert not [m for m in imported if m.split(".")[0] in ("typer", "click")]


def test_help_and_a_bad_option_still_go_through_typer(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    probe = ("import sys\nsys.argv = ['sriov-node', *sys.argv[1:]]\nimport sriov_node.cli as cli\n"
             "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
             "print('typer' in sys.modules, file=sys.stderr)")
    for argv in (["apply", "--help"], ["apply", "--bogus"], ["--version"]):
        proc = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env, timeout=60)
        assert proc.stderr.rstrip().endswith("True"), (argv, proc.stderr)
