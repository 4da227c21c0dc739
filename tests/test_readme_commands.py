"""The README's two commands, in order, in a fresh clone: the demo, then the test set-up.

`scripts/demo` builds a simulated host; `scripts/test` then installs the checkout in editable
mode. A simulated host inside the checkout once made that install walk symlink cycles forever.
This runs the demo for real and then the set-up step of `scripts/test` (the whole suite would
recurse), each with a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_demo_then_test_setup_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("VIRTUAL_ENV", None)
    demo = subprocess.run(["bash", "scripts/demo"], cwd=clone, capture_output=True, text=True, timeout=900, env=env)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "zero writes" in demo.stdout and "unchanged" in demo.stdout
    assert not any(p.name == ".sriov-node-sim.json" for p in clone.rglob(".sriov-node-sim.json"))
    host = tmp_path / "cache/sriov-node/demo-host"
    assert (host / ".sriov-node-sim.json").exists()
    # the newcomer is told how to go on, and the demo host holds the config it applied
    assert f'SRIOV_NODE_ROOT="{host}"' in demo.stdout and "/.venv-demo/bin" in demo.stdout  # the demo's own venv
    status = subprocess.run([str(clone / ".venv-demo/bin/sriov-node"), "status"], capture_output=True, text=True,
                            env={**env, "SRIOV_NODE_ROOT": str(host)}, timeout=120)
    assert status.returncode == 0 and "converged" in status.stdout and "no config" not in status.stdout, status.stderr
    setup = subprocess.run(["bash", "scripts/setup", "test,systemd"], cwd=clone, capture_output=True, text=True,
                           timeout=600, env=env)
    assert setup.returncode == 0, setup.stderr[-3000:]


def test_sim_create_refuses_a_directory_inside_a_python_project(tmp_path):
    from sriov_node.sim.build import create_host

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ValueError, match="inside the Python project"):
        create_host(str(tmp_path / "demo-host"))
    assert not (tmp_path / "demo-host").exists()


@pytest.mark.parametrize("script", ["demo", "setup", "install", "kernel-lab"])
def test_every_script_answers_help_without_doing_anything(script, tmp_path):
    # `--help` once ran the whole benchmark (and the demo ignored its arguments): a newcomer's
    # first try must print usage, exit 0, and leave no trace.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    out = subprocess.run(["bash", str(REPO / "scripts" / script), "--help"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "set -e" not in out.stdout
    assert list(tmp_path.iterdir()) == []  # no cache, no simulated host, no lab run


def test_bench_help_lists_its_options_and_runs_nothing():
    import sys

    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--quick", "--no-lab", "--no-write"):
        assert option in out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "bench.py"), "--bogus"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--bogus" in bad.stderr


def test_sim_create_keeps_an_existing_simulated_host_unless_forced(tmp_path):
    host, config = tmp_path / "host", tmp_path / "host/etc/sriov-node/config.toml"
    assert run_cli("sim", "create", str(host)).returncode == 0
    config.parent.mkdir(parents=True)
    config.write_text("version = 1\n")
    again = run_cli("sim", "create", str(host))
    assert again.returncode == 2 and "--force" in again.stderr and "already a simulated host" in again.stderr
    assert config.read_text() == "version = 1\n"
    forced = run_cli("sim", "create", str(host), "--force")
    assert forced.returncode == 0 and not config.exists()
