"""What a newcomer met on an installed node (issue 24's polish): blank lines that pile up under `set`,
`sim hold`/`sim release` of one shape, messages that name the installed examples, the metrics
where the distribution's node exporter reads them, man pages that render their tables, a demo that
installs only what it needs."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sriov_node.authoring.toml_blocks import EditError, apply_edit, parse_assignments, remove_edit
from tests.helpers import PF0, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = (REPO / "etc/sriov-node/config.toml").read_text()

# ---------------------------------------------------------------------------- set/unset: blank lines stay put

STARTS = [
    "",
    "version = 1\n",
    EXAMPLE,
    'version = 1\n\n[[pf]]\nname = "a"\nnum_vfs = 2\n\n[device_plugin]\nconfig_file = "/run/x.json"\n',
    'version = 1\n\n[[pf]]\nname = "a"\nnum_vfs = 4\n\n  [[pf.vfs]]\n  range = "0-1"\n  driver = "vfio-pci"\n\n'
    '  [[pf.vfs]]\n  range = "2-3"\n  vlan = 7\n\n[[pf]]\nname = "b"\nnum_vfs = 2\n',
]
EDITS = [
    ("set", ("num_vfs=4",)), ("set", ("mtu=9000",)), ("unset", ("mtu",)),
    ("set", ("vfs=0-1:vfio-pci",)), ("set", ("vfs=0-1:vfio-pci", "vfs=2-3:iavf")), ("unset", ("vfs",)),
    ("set", ("vfs[2-3].vlan=7",)), ("unset", ("vfs[2-3].vlan",)), ("unset", ("vfs[2-3]",)),
    ("set", ("vfs[0-1].trust=true",)), ("unset", ("vfs[0-1]",)), ("unset", ()),
]
NAMES = ["a", "b", "ens1f0"]


def _edit(text: str, command: str, name: str, args) -> str:
    """What `sriov-node set|unset NAME ARGS` does to the file's text (transaction.py finds the block by name)."""
    pfs = tomllib.loads(text).get("pf", []) if text else []
    index = next((i for i, pf in enumerate(pfs) if pf.get("name") == name), None)
    if command == "set":
        return apply_edit(text, index, ("name", name), parse_assignments(args))
    if index is None:
        raise EditError(f"no block selects {name}")
    if not args:
        return remove_edit(text, index)
    return apply_edit(text, index, None, parse_assignments(args, unset=True))


def _blank_shape(text: str):
    """The file's blank-line faults: a run of 2+ blank lines, a blank first line, a blank last line."""
    return (max([len(m.group(0)) - 1 for m in re.finditer(r"\n\n+", text)] + [0]) > 1,
            text.startswith("\n"), text.endswith("\n\n"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from(STARTS),
       steps=st.lists(st.tuples(st.sampled_from(EDITS), st.sampled_from(NAMES)), min_size=1, max_size=12))
def test_edit_sequences_never_pile_up_blank_lines(start, steps):
    text = start
    for (command, args), name in steps:
        try:
            text = _edit(text, command, name, args)
        except EditError:
            continue  # refused: the text is unchanged
        assert _blank_shape(text) == (False, False, False), (steps, text)


@pytest.mark.parametrize("start", STARTS[1:])
@pytest.mark.parametrize("cycle", [
    [("set", "b", ("num_vfs=4",)), ("set", "b", ("vfs[2-3].vlan=7",)), ("unset", "b", ("vfs[2-3].vlan",)),
     ("set", "b", ("vfs=0-1:vfio-pci",)), ("unset", "b", ())],
    [("set", "a", ("vfs=0-1:vfio-pci", "vfs=2-3:iavf")), ("set", "a", ("vfs=0-1:vfio-pci",)), ("unset", "a", ("vfs",))],
    [("set", "ens1f0", ("vfs[8-9].vlan=5",)), ("unset", "ens1f0", ("vfs[8-9]",))],
])
def test_repeated_cycles_leave_the_file_as_the_first_cycle_left_it(start, cycle):
    """One cycle may settle the file (a group laid out anew loses its comments); every further cycle is byte-identical."""
    texts = []
    text = start
    for _ in range(4):
        for command, name, args in cycle:
            try:
                text = _edit(text, command, name, args)
            except EditError:
                continue
            assert _blank_shape(text) == (False, False, False), (command, name, args, text)
        texts.append(text)
    assert texts[1:] == texts[:1] * 3 or texts[2:] == texts[1:2] * 2, texts


def test_set_then_unset_on_the_command_line_keeps_the_files_blank_lines(make_host, tmp_path):
    host = make_host()
    config = tmp_path / "config.toml"
    config.write_text(f'version = 1\n\n[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n')
    before = config.read_text()
    for _ in range(3):
        for args in (["set", PF0, "vfs[2-3].vlan=7"], ["unset", PF0, "vfs[2-3].vlan"], ["set", PF0, "vfs=0-1:vfio-pci"],
                     ["unset", PF0, "vfs"]):
            proc = run_cli(*args, "--no-apply", root=host.root, config=str(config))
            assert proc.returncode == 0, proc.stderr
            assert not config.read_text().endswith("\n\n"), config.read_text()
    assert config.read_text() == before


# ---------------------------------------------------------------------------- sim hold / sim release: one shape

VF0, VF1 = "0000:20:02.0", "0000:20:02.1"  # PF0's first two VFs


@pytest.fixture
def held(make_host, write_config):
    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  driver = "vfio-pci"\n')
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    assert run_cli("sim", "hold", host.root, VF0).returncode == 0
    assert run_cli("sim", "hold", host.root, VF1, "--pid", "77").returncode == 0
    return host


def _pids(host) -> set:
    return {p for p in os.listdir(os.path.join(host.root, "proc")) if p.isdigit()}


def test_release_takes_the_vf_as_hold_does(held):
    assert _pids(held) == {"4242", "77"}
    assert run_cli("sim", "release", held.root, VF1).returncode == 0
    assert _pids(held) == {"4242"}  # only VF1's holder let go
    proc = run_cli("sim", "release", held.root, VF0, "--pid", "5")
    assert proc.returncode == 0 and "held by pid 4242, not 5" in proc.stderr
    assert _pids(held) == {"4242"}
    assert run_cli("sim", "release", held.root, VF0, "--pid", "4242").returncode == 0
    assert _pids(held) == set()


def test_release_names_a_vf_that_is_not_there(held):
    proc = run_cli("sim", "release", held.root, "0000:20:09.0")
    assert proc.returncode == 2 and "0000:20:09.0: no such PCI device" in proc.stderr
    assert _pids(held) == {"4242", "77"}


def test_release_by_pid_alone_still_works(held):
    assert run_cli("sim", "release", held.root, "--pid", "77").returncode == 0
    assert run_cli("sim", "release", held.root).returncode == 0  # sim hold's default pid
    assert _pids(held) == set()


# ---------------------------------------------------------------------------- messages on an installed node

EXAMPLES = "/usr/share/doc/sriov-node/examples/"


def test_the_examples_directory_is_where_the_package_puts_them():
    """dh_installexamples puts debian/sriov-node.examples' files in /usr/share/doc/sriov-node/examples/."""
    listed = (REPO / "debian/sriov-node.examples").read_text().split()
    assert "etc/sriov-node/config.toml" in listed and "docs/examples/*.toml" in listed


def test_a_missing_config_names_the_installed_examples(make_host):
    host = make_host()
    for command in ("apply", "validate"):
        proc = run_cli(command, root=host.root)
        assert proc.returncode == 2
        assert f"no such file; create it (examples: {EXAMPLES})" in proc.stderr
        assert "see etc/" not in proc.stderr


def test_status_without_a_config_says_to_create_it_before_apply(make_host):
    host = make_host()
    proc = run_cli("status", root=host.root)
    assert proc.returncode == 0
    path = os.path.join(host.root, "etc/sriov-node/config.toml")
    assert (f"{path} does not exist and no generation is applied yet: create it (examples: {EXAMPLES}), "
            "then run sriov-node apply") in proc.stdout
    os.makedirs(os.path.dirname(path))
    Path(path).write_text(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 1\n')
    proc = run_cli("status", root=host.root)
    assert f"compared with {path}: no generation applied yet; run sriov-node apply" in proc.stdout


# ---------------------------------------------------------------------------- man pages: lint-clean, tables as tables


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("man")
    import subprocess

    subprocess.run([sys.executable, str(REPO / "scripts/manpages.py"), str(out)], check=True)
    return out


def _man(page: Path, width: int):
    import subprocess

    return subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                          env={**os.environ, "MANWIDTH": str(width), "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""})


@pytest.mark.parametrize("name", ["sriov-node.8", "sriov-node.toml.5"])
def test_every_man_page_is_lint_clean(pages, name):
    import shutil
    import subprocess

    if not shutil.which("mandoc"):
        pytest.fail("mandoc is missing: scripts/setup installs it with the test extra")
    proc = subprocess.run(["mandoc", "-T", "lint", "-W", "style", str(pages / name)], capture_output=True, text=True)
    assert proc.stdout + proc.stderr == "", proc.stdout + proc.stderr
    for width in (80, 100):
        shown = _man(pages / name, width)
        assert shown.returncode == 0 and not shown.stderr.strip(), (width, shown.stderr)


def test_the_desired_driver_table_renders_as_a_table(pages):
    text = _man(pages / "sriov-node.toml.5", 80).stdout
    section = text[text.index("DESIRED DRIVER OF A VF"):text.index("SEE ALSO")]
    rows = [line.strip() for line in section.splitlines()[1:] if line.strip()]
    assert rows[0].startswith("┌") and rows[-1].startswith("└") and rows[2].startswith("├"), section
    assert re.match(r"│the group's driver +the VF is converged when +│", rows[1]), section
    assert re.match(r"│\"any\" +always +│", rows[-2]), section
    assert "Type:" not in section
    # a cell with an escaped pipe stays one cell: the eswitch modes are the type, not the default
    assert re.search(r'Type: "legacy" \| "switchdev"\.\s+Default: not managed\.', text), text


# ---------------------------------------------------------------------------- metrics where the distribution reads them

DEBIAN_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # prometheus-node-exporter 1.5 (Debian 12): --help's default


def test_metrics_without_a_textfile_write_where_the_node_exporter_reads(make_host, write_config):
    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 1\n')
    proc = run_cli("metrics", root=host.root, config=config)
    assert proc.returncode == 0 and proc.stdout.startswith("# HELP")  # no node exporter: printed
    directory = os.path.join(host.root, DEBIAN_TEXTFILE_DIR.lstrip("/"))
    os.makedirs(directory)
    proc = run_cli("metrics", root=host.root, config=config)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert open(os.path.join(directory, "sriov_node.prom")).read().startswith("# HELP")


def test_the_agent_unit_and_the_examples_use_the_distributions_directory():
    unit = (REPO / "systemd/sriov-node-agent.service").read_text()
    writable = [p for line in unit.splitlines() if line.startswith("ReadWritePaths=") for p in line.split("=", 1)[1].split()]
    assert f"-{DEBIAN_TEXTFILE_DIR}" in writable
    assert "-/var/lib/node_exporter/textfile" in writable  # nodes configured for the old guide's directory keep theirs
    for doc in ("README.md", "docs/guide.md", "docs/examples/intel-x710.toml", "docs/config-reference.md"):
        text = (REPO / doc).read_text()
        assert f"{DEBIAN_TEXTFILE_DIR}/sriov_node.prom" in text, doc
        assert 'textfile = "/var/lib/node_exporter' not in text, doc
    control = (REPO / "debian/control").read_text()
    assert "Suggests: prometheus-node-exporter" in control and DEBIAN_TEXTFILE_DIR in control


# ---------------------------------------------------------------------------- scripts/demo installs what it needs, once


def test_the_demo_installs_only_what_it_runs_and_only_once(tmp_path):
    """A cold demo makes its own venv (sriov-node and its run-time dependencies: ~47 MB, where the test
    toolchain's .venv is ~285 MB); a warm one runs no pip (with no index reachable, pip would fail)."""
    import subprocess

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_NODE_", "VIRTUAL_ENV"))}
    env.update(DEMO_VENV=str(venv), DEMO_ROOT=str(tmp_path / "host"))
    cold = subprocess.run([str(REPO / "scripts/demo")], capture_output=True, text=True, env=env, timeout=600)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    assert "demo: installing sriov-node" in cold.stderr and "generation 1 (apply, converged)" in cold.stdout
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 80 * 2**20, f"{size / 2**20:.0f} MB"
    site = next(venv.glob("lib/python3*/site-packages"))
    for tool in ("ansible", "ansible_lint", "black", "pytest", "kubernetes_validate", "systemd"):
        assert not (site / tool).exists(), tool
    assert not (venv / "bin/promtool").exists()
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path / "nothing"))
    warm = subprocess.run([str(REPO / "scripts/demo")], capture_output=True, text=True, env=env, timeout=600)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert "installing" not in warm.stderr and "converged" in warm.stdout
    assert f'export PATH="{venv}/bin:$PATH"' in warm.stdout
