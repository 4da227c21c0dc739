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


def test_a_guest_that_dies_before_it_is_ready_is_booted_once_more():
    # the test knob makes the first boot's PID 1 exit before READY: a kernel panic during boot
    result = run_lab('echo "ran once" > "$LAB_OUT/ran"; echo ran', LAB_TEST_DIE_BEFORE_READY="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ran") == 1, result.stdout
    assert "died before it was ready: kernel panic" in result.stderr and "Attempted to kill init" in result.stderr
    assert "retrying once" in result.stderr and "retried=1" in result.stderr
    out = re.search(r"out=(\S+)", result.stderr).group(1)
    with open(os.path.join(out, "ran")) as fh:
        assert fh.read() == "ran once\n"
    assert os.path.exists(os.path.join(os.path.dirname(out), "console.attempt1.log"))


def test_a_guest_that_hangs_before_it_is_ready_is_booted_once_more_within_the_timeout():
    # the test knob makes the first boot hang, silent, before READY (as one did in CI until
    # LAB_TIMEOUT): after LAB_READY_TIMEOUT it is stopped and booted again, in what is left
    start = time.monotonic()
    result = run_lab('echo "ran once" > "$LAB_OUT/ran"; echo ran', LAB_TEST_HANG_BEFORE_READY="1",
                     LAB_READY_TIMEOUT="25", LAB_TIMEOUT="240")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ran") == 1, result.stdout
    assert "not ready within 25 s (LAB_READY_TIMEOUT): the boot hung" in result.stderr, result.stderr
    assert "the boot hangs before the command is ready" in result.stderr  # the first console's tail
    assert "retrying once" in result.stderr and "retried=1" in result.stderr
    assert time.monotonic() - start < 240
    # without the knob, a boot that never gets ready is stopped, booted again, and the whole stays
    # within LAB_TIMEOUT: here the second boot hangs too (a READY deadline no boot meets)
    start = time.monotonic()
    result = run_lab("echo never", LAB_READY_TIMEOUT="1", LAB_TIMEOUT="70")
    assert result.returncode == 125, result.stderr
    assert "never" not in result.stdout
    assert result.stderr.count("retrying once") == 1 and "LAB_READY_TIMEOUT" in result.stderr, result.stderr
    assert time.monotonic() - start < 70 + 60


def test_a_guest_that_dies_after_it_is_ready_is_never_retried():
    # the command starts (READY), then the kernel panics under it: the command may have done half
    # its work, so no second boot, even with the first-boot knob's retry already spent or not
    marker = "started-" + str(time.time())
    result = run_lab(f'echo {marker}; echo c > /proc/sysrq-trigger; sleep 30')
    assert result.returncode == 125, result.stderr
    assert result.stdout.count(marker) == 1, result.stdout
    assert "kernel panic" in result.stderr and "retrying" not in result.stderr and "retried" not in result.stderr
    # a retried boot whose command then dies is not retried again either
    result = run_lab(f'echo {marker}; echo c > /proc/sysrq-trigger; sleep 30', LAB_TEST_DIE_BEFORE_READY="1")
    assert result.returncode == 125, result.stderr
    assert result.stdout.count(marker) == 1, result.stdout
    assert result.stderr.count("retrying once") == 1 and "second boot" in result.stderr
