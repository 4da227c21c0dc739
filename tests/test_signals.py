"""SIGINT and SIGTERM at any moment of a run: one answer, and the exit code it states is the process's.

With --json there is exactly one JSON document on stdout and its exit_code is the process's exit
status; without, the answer is text and a short sentence, never a traceback; a signal received
before the process reported makes the exit 130/143 and the report say "interrupted".

The signal is sent once the process catches SIGTERM (read from /proc/PID/status: `main`
installs its handlers before anything heavy is imported), then after a spread of delays, and at
moments found with the simulated kernel (inside the last write, right after it). The delays only
spread the moments: nothing about timing is asserted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, List

import pytest

from tests.helpers import open_host
from sriov_node.sim.kernel import JOURNAL, SimKernel
from tests.helpers import CLI, PF0, PF1, TWO_PFS

HANG_GUARD = 60
DELAYS_MS = (0, 10, 30, 60, 100, 200)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def spawn(root: str, config: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    return subprocess.Popen([CLI, "--root", root, "--config", config, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            caught = next(int(line.split()[1], 16) for line in fh if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(caught & (1 << (signal.SIGTERM - 1)))


def wait_until(proc: subprocess.Popen, predicate, what: str) -> bool:
    """Wait for `predicate` (an event, not a time); False when the process ended first."""
    deadline = time.monotonic() + HANG_GUARD
    while not predicate():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.002)
    return True


def finish(proc: subprocess.Popen, sig: int, *, as_json: bool) -> Dict[str, Any]:
    """The process's answer, checked against the rule; the JSON document (or {}) for more checks."""
    out, err = proc.communicate(timeout=HANG_GUARD)
    code = proc.returncode
    assert code >= 0, f"killed by signal {-code}: no answer\n{err}"
    assert "Traceback" not in err, err
    interrupted = code == 128 + sig
    if not as_json:
        if interrupted:
            assert signal.Signals(sig).name in err, err
        return {}
    body = json.loads(out)  # exactly one document: anything more or less does not parse
    # where the document states it: at the top, in its error, or (set) in its apply part
    stated = next(part["exit_code"] for part in (body, body.get("error") or {}, body.get("apply") or {})
                  if "exit_code" in part)
    assert stated == code, (code, out, err)
    if interrupted:
        body = body["apply"] if "exit_code" not in body and "apply" in body else body
        said = body.get("interrupted") or body.get("error", {}).get("interrupted") or body.get("result")
        assert said in (True, signal.Signals(sig).name, "interrupted"), out
        if "result" in body:
            assert body["result"] == "interrupted", out
    else:
        assert body.get("interrupted") in (None, False), out
    return body


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("command", [["apply", "--json"], ["status", "--json"], ["validate", "--json"],
                                     ["set", PF1, "num_vfs=3", "--json"], ["boot", "--json", "--wait", "5"],
                                     ["check", "--json"], ["apply"], ["status"], ["validate"]], ids=" ".join)
def test_a_signal_at_any_moment_gets_one_answer(make_host, write_config, command, sig):
    host = make_host(vfio_loaded=True)
    config = write_config(TWO_PFS)
    SimKernel(host.root).add_fault("delay", seconds=0.01)  # every write takes a while: moments inside the run
    outcomes: List[int] = []
    for delay in DELAYS_MS:
        proc = spawn(host.root, config, *command)
        if wait_until(proc, lambda: catches_sigterm(proc.pid), "signal handlers"):
            time.sleep(delay / 1000)
            proc.send_signal(sig)
        finish(proc, sig, as_json="--json" in command)
        outcomes.append(proc.returncode)
    assert 128 + sig in outcomes  # the early moments at least land before the report


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_inside_the_last_write_ends_in_an_interrupted_report(make_host, write_config, sig):
    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')  # one action: sriov_numvfs = 2
    SimKernel(host.root).add_fault("delay", attr="sriov_numvfs", seconds=0.5)
    proc = spawn(host.root, config, "apply", "--json")
    assert wait_until(proc, lambda: os.path.isdir(os.path.join(host.root, JOURNAL)), "the write")
    proc.send_signal(sig)
    body = finish(proc, sig, as_json=True)
    # the write ran to its end (an action is never cut) and was read back; the signal came before the report
    assert proc.returncode == 128 + sig and body["interrupted"] is True and body["signal"] == signal.Signals(sig).name
    assert body["pfs"][0]["status"] == "changed" and open_host(host.root).sysfs.num_vfs(PF0) == 2


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("delay", (0, 2, 5, 10, 20, 50))
def test_a_signal_after_the_last_write_gets_one_consistent_answer(make_host, write_config, sig, delay):
    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    SimKernel(host.root).add_fault("delay", attr="sriov_numvfs", seconds=0.2)
    proc = spawn(host.root, config, "apply", "--json")
    journal = os.path.join(host.root, JOURNAL)
    assert wait_until(proc, lambda: os.path.isdir(journal), "the write")
    if wait_until(proc, lambda: not os.path.isdir(journal), "the end of the write"):
        time.sleep(delay / 1000)
        proc.send_signal(sig)
    body = finish(proc, sig, as_json=True)
    assert body["pfs"][0]["status"] == "changed"  # converged and read back either way
    assert (body["result"], body["exit_code"]) in (("converged", 0), ("interrupted", 128 + sig))


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_second_signal_stops_at_once_with_one_document(make_host, write_config, tmp_path, sig):
    host = make_host(vfio_loaded=True)
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\ndriver = "vfio-pci"\n')
    SimKernel(host.root).add_fault("delay", attr="driver_override", seconds=2)
    log = tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    with open(log, "w") as err:
        proc = subprocess.Popen([CLI, "--root", host.root, "--config", config, "apply", "--json"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        journal = os.path.join(host.root, JOURNAL)
        assert wait_until(proc, lambda: host.sysfs.num_vfs(PF0) == 4 and os.path.isdir(journal), "a slow write")
        proc.send_signal(sig)
        assert wait_until(proc, lambda: "stopping after the current action" in log.read_text(), "the first signal")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 128 + sig and "Traceback" not in log.read_text()
    body = json.loads(out)
    assert body["error"]["type"] == "Interrupted" and body["error"]["exit_code"] == 128 + sig
    assert "second" in body["error"]["message"]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_waiting_for_the_lock_says_so(make_host, write_config, sig):
    from sriov_node.engine.state import ApplyLock

    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    with ApplyLock(host, timeout=1):
        proc = spawn(host.root, config, "apply", "--json", "--timeout", "50")
        assert wait_until(proc, lambda: _has_open(proc.pid, "apply.lock"), "the lock wait")
        proc.send_signal(sig)
        body = finish(proc, sig, as_json=True)
    assert proc.returncode == 128 + sig
    assert "stopped while waiting for another sriov-node run" in body["error"]["message"]
    assert open_host(host.root).sysfs.num_vfs(PF0) == 0


def _has_open(pid: int, name: str) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/" + name) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


SWALLOWED = """
import os, sys, time, weakref
from sriov_node.cli import signals
signals.install()
class A: pass
a = A()
def callback(ref):  # Python ignores what a weakref callback raises (importlib has such callbacks)
    os.kill(os.getpid(), {sig})
    for _ in range(3): pass
r = weakref.ref(a, callback)
try:
    del a
    time.sleep(30)
    print("not stopped")
except signals.Interrupted as exc:
    print("stopped", exc.signum)
"""


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_landing_where_python_ignores_exceptions_still_stops_the_run(sig):
    import sys

    proc = subprocess.run([sys.executable, "-c", SWALLOWED.format(sig=int(sig))], capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert proc.stdout.strip() == f"stopped {int(sig)}" and proc.stderr == "", proc.stderr


WRAPPED = """
import os, signal, sys
import sriov_node.cli as cli

class Descriptor:
    def __set_name__(self, owner, name):  # as a dataclass field's, while a module is imported
        os.kill(os.getpid(), {sig})

def run(argv, as_json):
    class Imported:
        field = Descriptor()
    return 0

cli._run = run
sys.argv = ["sriov-node", *{args!r}]
cli.main()
"""


@pytest.mark.parametrize("as_json", (True, False), ids=("json", "text"))
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_signal_that_python_wraps_in_another_error_is_still_the_signals_answer(sig, as_json):
    """Python turns what a signal raised inside `__set_name__` (a class body, run by an import) into
    a RuntimeError: the answer is still the signal's, never a traceback."""
    import sys

    args = ["--json", "status"] if as_json else ["status"]
    proc = subprocess.Popen([sys.executable, "-c", WRAPPED.format(sig=int(sig), args=args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    body = finish(proc, sig, as_json=as_json)
    assert proc.returncode == 128 + sig
    if as_json:
        assert body["error"]["interrupted"] == signal.Signals(sig).name


def _blocked_at_start() -> None:  # Popen's preexec_fn: as a parent that had blocked both would leave them
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("command", [["daemon", "--no-notify"], ["apply"], ["boot", "--wait", "5"]], ids=" ".join)
def test_signals_blocked_by_the_parent_are_still_answered(make_host, write_config, command, sig):
    """A signal mask is inherited through exec: started by a parent that had SIGINT and SIGTERM
    blocked, every command still gets them (the daemon stops on SIGTERM instead of running on)."""
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "0-5"\ndriver = "vfio-pci"\n')
    SimKernel(host.root).add_fault("delay", attr="driver_override", seconds=0.2)  # a run long enough to be hit
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    proc = subprocess.Popen([CLI, "--root", host.root, "--config", path, *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_blocked_at_start)
    live = open_host(host.root).sysfs
    assert wait_until(proc, lambda: catches_sigterm(proc.pid) and (live.num_vfs(PF0) or 0) > 0, "VFs"), \
        proc.communicate()[1]
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (0 if command[0] == "daemon" else 128 + sig), err  # the daemon stops cleanly on both
    assert "Traceback" not in err, err
