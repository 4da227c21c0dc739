"""Progress on a terminal: per PF, VFs created and bound as configured; nothing off a terminal or with --json."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import threading

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.views.progress import Progress, terminal_progress
from sriov_node.engine.reconcile import reconcile
from tests.helpers import CLI, run_cli

CONFIG = """
[[pf]]
name = "ens1f0"
num_vfs = 6
  [[pf.vfs]]
  range = "0-1"
  driver = "vfio-pci"
[[pf]]
name = "ens1f1"
num_vfs = 2
"""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_each_pf_ends_with_its_counts(make_host, write_config):
    host = make_host(("x710", 2, None))
    desired = load_config(write_config(CONFIG))
    h = open_host(host.root)
    screen = Terminal()
    with terminal_progress(h, desired, stream=screen) as progress:
        assert isinstance(progress, Progress)
        report = reconcile(h, desired, progress=progress)
    assert report.exit_code == 0
    finals = [line.rsplit("\r\x1b[K", 1)[-1] for line in screen.getvalue().split("\n") if line]
    assert len(finals) == 2
    assert finals[0].startswith("0000:20:00.0 (ens1f0): VFs 6/6 created, 6/6 bound as configured (")
    assert finals[1].startswith("0000:20:00.1 (ens1f1): VFs 2/2 created, 2/2 bound as configured (")
    assert "waiting for the kernel to create VFs" in screen.getvalue()  # drawn before the first write


def test_nothing_is_drawn_off_a_terminal_or_with_json(make_host, write_config):
    host = make_host(("x710", 2, None))
    desired = load_config(write_config(CONFIG))
    with terminal_progress(open_host(host.root), desired, stream=io.StringIO()) as progress:
        assert progress is None
    with terminal_progress(open_host(host.root), desired, stream=Terminal(), as_json=True) as progress:
        assert progress is None


def _run_on_a_terminal(argv):
    """Run the CLI with stderr on a pseudo-terminal; (exit code, what the terminal showed)."""
    master, slave = pty.openpty()
    shown = []

    def read():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    env["TERM"] = "xterm"
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=slave, env=env, timeout=120)
    os.close(slave)
    reader.join()
    os.close(master)
    return proc.returncode, b"".join(shown).decode()


def test_set_shows_progress_on_a_terminal_only(make_host, write_config):
    host = make_host(("x710", 2, None))
    path = write_config(CONFIG)
    code, shown = _run_on_a_terminal([CLI, "--root", host.root, "--config", path, "set", "ens1f1", "num_vfs=3"])
    assert code == 0
    assert "0000:20:00.1 (ens1f1): VFs 3/3 created, 3/3 bound as configured" in shown
    plain = run_cli("set", "ens1f1", "num_vfs=4", root=host.root, config=path)
    assert plain.returncode == 0 and "bound as configured" not in plain.stderr + plain.stdout
