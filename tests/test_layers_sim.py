"""The simulator is chosen where the program starts: the CLI opens the root (cli/root.open_root).

(tests/test_layers.py checks that no module below the CLI imports sriov_node.sim.)"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import sriov_node

PACKAGE = Path(sriov_node.__file__).parent


def open_host_calls(package: Path) -> List[str]:
    """Calls of host.open_host outside the host layer and the CLI's opener (cli/root.py): each
    would open a `sim create` root as a read-only capture."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if rel.parts[0] == "host" or rel.as_posix() == "cli/root.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name == "open_host":
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_roots_are_opened_only_by_the_cli_opener():
    """Every module that opens a root calls sriov_node.cli.root.open_root (or is handed a Host)."""
    assert open_host_calls(PACKAGE) == []


def test_a_live_or_captured_root_never_loads_the_simulator(tmp_path):
    """At run time too: opening a root that is not a `sim create` tree, and listening for its
    uevents, loads no module of the simulator (the package's marker name only)."""
    (tmp_path / "sys").mkdir()
    code = ("import sys\n"
            "from sriov_node.cli.root import open_root\n"
            "from sriov_node.service.uevents import open_sources\n"
            f"host = open_root({str(tmp_path)!r})\n"
            "try:\n    open_sources(host)\nexcept OSError as exc:\n    print(exc)\n"
            "print(host.kind, sorted(m for m in sys.modules if m.startswith('sriov_node.sim.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{tmp_path} is a captured tree: it sends no uevents", "capture []"]


def test_a_sim_root_is_opened_with_its_uevent_listener(make_host):
    """The simulated host carries its kernel's uevent listener; the service asks the host for it."""
    from sriov_node.service.uevents import open_sources

    host = make_host()
    assert host.kind == "sim" and host.uevents is not None
    sources = open_sources(host)
    try:
        assert [s.description for s in sources] == ["the simulated kernel's uevents",
                                                    "the simulated kernel's link changes"]
        host.sysfs.write("sys/bus/pci/devices", ("0000:20:00.0", "sriov_numvfs"), "1\n")
        events = [e for s in sources for e in s.drain()]
        assert ("add", "pci") in {(e.action, e.subsystem) for e in events}
    finally:
        for s in sources:
            s.close()
