"""scripts/kernel-lab's own contract: exit code, files back through $LAB_OUT, bounded failure."""

from __future__ import annotations

import os
import re
import subprocess
import time

from tests.lab.conftest import LAB, REPO


def run_lab(command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(LAB), command], cwd=str(REPO), capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})


def test_exit_code_and_lab_out_come_back():
    result = run_lab('echo "$(uname -r)" > "$LAB_OUT/kernel"; cat /proc/cmdline; exit 7')
    assert result.returncode == 7, result.stderr
    assert "intel_iommu=on" in result.stdout
    out = re.search(r"out=(\S+)", result.stderr).group(1)
    with open(os.path.join(out, "kernel")) as fh:
        assert fh.read().startswith("6.1.")


def test_a_guest_that_never_finishes_fails_clearly_within_the_timeout():
    start = time.monotonic()
    result = run_lab("sleep 600", LAB_TIMEOUT="20")
    assert result.returncode == 125
    assert time.monotonic() - start < 120
    assert "console" in result.stderr.lower()
