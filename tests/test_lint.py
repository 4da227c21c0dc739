"""No unused imports, undefined names or dead assignments in the package, its tests and scripts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_pyflakes_finds_nothing():
    targets = [str(REPO / "sriov_node"), str(REPO / "tests"), *map(str, sorted((REPO / "scripts").glob("*.py")))]
    proc = subprocess.run([sys.executable, "-m", "pyflakes", *targets], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
