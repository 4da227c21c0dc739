"""RHEL 9's system Python (3.9) must be able to import and run the package."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "sriov_node"


def _python39() -> Optional[str]:
    candidates = [shutil.which("python3.9")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for candidate in filter(None, candidates):
        try:
            ok = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return candidate
    return None


def test_vermin_says_python_39_is_enough():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    assert vermin, "vermin is a test dependency (pip install -e .[test])"
    result = subprocess.run([vermin, "--target=3.9-", "--no-tips", "--violations", "--eval-annotations", str(PACKAGE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_cli_runs_under_python_39(tmp_path):
    python = _python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    venv = tmp_path / "venv39"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(REPO)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    cli = str(venv / "bin/sriov-node")
    root = str(tmp_path / "host")
    steps = [
        [cli, "--help"],
        [cli, "sim", "create", root, "--nic", "x710:2", "--nic", "e810:2"],
        [cli, "--root", root, "--config", str(REPO / "etc/sriov-node/config.toml"), "apply"],
        [cli, "--root", root, "status", "--json"],
    ]
    for argv in steps:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
