"""`sriov-node metrics` and write_textfile: Prometheus text format that node_exporter's textfile collector reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.views.metrics import FAMILIES, PREFIX, UNIT_TEXTFILE_DIR, UNIT_TEXTFILE_DIRS, textfile_path, write_textfile
from sriov_node.sim.kernel import SimKernel
from sriov_node.engine.state import read_state
from tests.helpers import CLI, run_cli

from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)
CONFIG = f"""
[metrics]
textfile = "/var/lib/node_exporter/textfile/sriov_node.prom"

[[pf]]
pci = "{PF0}"
num_vfs = 4
  [[pf.vfs]]
  range = "0-1"
  driver = "vfio-pci"

[[pf]]
name = "ens9f0"        # not on this host
num_vfs = 2
"""


def samples(text):
    """{(metric, frozenset(labels)): value} as Prometheus' own parser reads the text."""
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge"
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found, metric, **labels):
    return found[("sriov_node_" + metric, frozenset(labels.items()))]


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None))


def test_metrics_after_an_apply(host, write_config):
    path = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=path).returncode == 1  # pf[1] is not on this host
    prom = os.path.join(host.root, "var/lib/node_exporter/textfile/sriov_node.prom")
    os.makedirs(os.path.dirname(prom))  # node_exporter's directory
    proc = run_cli("metrics", root=host.root, config=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the config names a textfile: written there, under --root
    with open(prom) as fh:
        found = samples(fh.read())
    pf = {"pf": PF0, "name": "ens1f0", "block": "pf[0]"}
    assert value(found, "pf_vfs_desired", **pf) == 4
    assert value(found, "pf_vfs_actual", pf=PF0, name="ens1f0") == 4
    assert value(found, "pf_vfs_actual", pf=PF1, name="ens1f1") == 0
    assert value(found, "pf_vfs_max", pf=PF0, name="ens1f0") == 64
    assert value(found, "pf_converged", **pf) == 1 and value(found, "pf_differences", **pf) == 0
    assert value(found, "block_failed", block="pf[1]", kind="absent") == 1
    assert value(found, "converged") == 0 and value(found, "config_valid") == 1
    state = read_state(host)
    assert value(found, "last_apply_timestamp_seconds") == state["unix_time"]
    assert value(found, "last_apply_duration_seconds") == state["duration_seconds"]
    assert value(found, "last_apply_success") == 0
    assert not [n for n in os.listdir(os.path.dirname(prom)) if n != "sriov_node.prom"]  # no temporary left

    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", device=host.sysfs.vf_address(PF0, 0),
                                     errno="EINVAL")
    host.sysfs.unbind(host.sysfs.vf_address(PF0, 0), "vfio-pci")  # drift, then an apply that fails on it
    assert run_cli("apply", root=host.root, config=path).returncode == 1
    found = samples(run_cli("metrics", "--output", "-", root=host.root, config=path).stdout)
    assert value(found, "pf_converged", **pf) == 0 and value(found, "pf_differences", **pf) >= 1
    assert value(found, "last_apply_errors", pf=PF0, name="ens1f0", errno="EINVAL") == 1


def test_an_invalid_config_still_writes_metrics_that_say_so(host, write_config, tmp_path):
    out = tmp_path / "sriov_node.prom"
    proc = run_cli("metrics", "--output", str(out), root=host.root, config=write_config("[[pf]]\nnum_vfs = 2\n"))
    assert proc.returncode == 2 and "needs exactly one selector" in proc.stderr
    found = samples(out.read_text())
    assert value(found, "config_valid") == 0
    assert value(found, "pf_vfs_actual", pf=PF0, name="ens1f0") == 0
    assert not any(name == "sriov_node_converged" for name, _ in found)


def test_write_textfile_is_what_the_daemon_calls(host, write_config, tmp_path):
    desired = load_config(write_config(CONFIG))
    h = open_host(host.root)
    assert textfile_path(h, desired) == os.path.join(host.root, "var/lib/node_exporter/textfile/sriov_node.prom")
    out = str(tmp_path / "node.prom")
    assert write_textfile(h, desired, out) == out
    found = samples(open(out).read())
    assert value(found, "pf_vfs_desired", pf=PF0, name="ens1f0", block="pf[0]") == 4
    assert value(found, "pf_converged", pf=PF0, name="ens1f0", block="pf[0]") == 0  # not applied yet
    assert not any(name.startswith("sriov_node_last_apply") for name, _ in found)  # no apply recorded yet
    assert oct(os.stat(out).st_mode & 0o777) == "0o644"


def test_an_unwritable_textfile_is_an_error_not_a_traceback(host, write_config, tmp_path):
    proc = run_cli("metrics", "--output", str(tmp_path / "missing-dir" / "x.prom"), root=host.root,
                   config=write_config(CONFIG))
    assert proc.returncode == 1 and "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def promtool():
    """promtool (scripts/setup puts it in the venv's bin; else the one on PATH)."""
    here = os.path.join(os.path.dirname(sys.executable), "promtool")
    found = here if os.access(here, os.X_OK) else shutil.which("promtool")
    assert found, "promtool is missing: run scripts/setup (it installs promtool for the tests)"
    return found


def test_promtool_accepts_every_metric_in_every_state(make_host, write_config, tmp_path):
    """`promtool check metrics` on what each state writes: no config, an invalid config, not applied yet,
    converged, a failed apply (kernel errors, a block absent), PFs without a netdev; together every family."""
    host = make_host(("x710", 2, None), ("nvme", 1, None))
    texts = {"no config": run_cli("metrics", root=host.root).stdout,
             "invalid config": run_cli("metrics", "-o", "-", root=host.root,
                                       config=write_config("[[pf]]\nnum_vfs = 2\n")).stdout}
    path = write_config(CONFIG)
    converged = write_config(CONFIG.split('[[pf]]\nname = "ens9f0"')[0] + '[[pf]]\npci = "0000:30:00.0"\nnum_vfs = 2\n')
    texts["not applied"] = run_cli("metrics", "-o", "-", root=host.root, config=path).stdout
    assert run_cli("apply", root=host.root, config=converged).returncode == 0
    texts["converged"] = run_cli("metrics", "-o", "-", root=host.root, config=converged).stdout
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", device=host.sysfs.vf_address(PF0, 0),
                                     errno="EINVAL")
    host.sysfs.unbind(host.sysfs.vf_address(PF0, 0), "vfio-pci")
    assert run_cli("apply", root=host.root, config=path).returncode == 1
    texts["failed"] = run_cli("metrics", "-o", "-", root=host.root, config=path).stdout

    seen = set()
    for state, text in texts.items():
        assert text, state
        out = tmp_path / "m.prom"
        out.write_text(text)
        with open(out) as fh:
            proc = subprocess.run([promtool(), "check", "metrics"], stdin=fh, capture_output=True, text=True)
        assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), (state, proc.stdout + proc.stderr)
        seen |= {family.name for family in text_string_to_metric_families(text)}
    assert seen == {PREFIX + name for name, _ in FAMILIES}


@pytest.mark.parametrize("command", [["metrics"], ["export", "device-plugin", "--json-only"]])
def test_output_to_dev_stdout_writes_through_the_pipe(host, write_config, command):
    """`-o /dev/stdout` (a pipe here) is written through, not replaced by a renamed temporary file."""
    path = write_config(CONFIG.replace('name = "ens9f0"', 'name = "ens1f1"')
                        + '  [[pf.vfs]]\n  range = "0-1"\n  driver = "iavf"\n  resource = "r"\n')
    proc = run_cli(*command, "-o", "/dev/stdout", root=host.root, config=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# HELP sriov_node_" if command == ["metrics"] else '{\n  "resourceList"')


UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "systemd", "sriov-node-agent.service")


def test_the_agent_unit_lets_the_documented_textfile_directory_be_written():
    """ProtectSystem=strict leaves /var read-only: the unit re-opens node_exporter's directory (the guide's),
    optional ('-') so that a node without node_exporter still starts the agent."""
    with open(UNIT) as fh:
        lines = [line.strip() for line in fh if line.startswith("ReadWritePaths=")]
    writable = [p for line in lines for p in line.split("=", 1)[1].split()]
    assert "ProtectSystem=strict" in open(UNIT).read()
    assert f"-{UNIT_TEXTFILE_DIR}" in writable
    docs = os.path.join(os.path.dirname(UNIT), "..", "docs", "guide.md")
    assert f'textfile = "{UNIT_TEXTFILE_DIR}/sriov_node.prom"' in open(docs).read()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_a_read_only_textfile_directory_names_the_unit_fix(host, write_config, tmp_path):
    """As under ProtectSystem=strict: the directory is a read-only mount; the daemon's write and the CLI's
    say which directory, that the unit makes only node_exporter's writable, and the drop-in that fixes it."""
    ro = tmp_path / "ro"
    ro.mkdir()
    path = write_config(CONFIG.replace("/var/lib/node_exporter/textfile/sriov_node.prom", f"{ro}/sriov_node.prom"))
    daemon_write = (f"from sriov_node.config import load_config; from sriov_node.cli.root import open_root as open_host; "
                    f"from sriov_node.views.metrics import write_textfile; from sriov_node.atomic import OutputError\n"
                    f"try: write_textfile(open_host({host.root!r}), load_config({path!r}), '{ro}/sriov_node.prom')\n"
                    f"except OutputError as exc: print(exc)")
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
              f"{CLI} --root {host.root} --config {path} metrics -o {ro}/sriov_node.prom; echo rc=$?; "
              f"{sys.executable} -c \"$0\"")
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script, daemon_write],
                          capture_output=True, text=True, timeout=60)
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    for text in (proc.stderr, proc.stdout.split("rc=1", 1)[1]):  # the CLI's error, the daemon's message
        assert f"{ro} is read-only to sriov-node" in text, proc.stdout + proc.stderr
        assert f"makes only {' and '.join(UNIT_TEXTFILE_DIRS)} writable" in text and f"ReadWritePaths={ro}" in text


def _promtool_ok(text, tmp_path):
    out = tmp_path / "lint.prom"
    out.write_text(text)
    with open(out) as fh:
        proc = subprocess.run([promtool(), "check", "metrics"], stdin=fh, capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_metrics_compare_the_host_with_the_applied_generation_as_status_does(host, tmp_path):
    config = os.path.join(host.root, "etc/sriov-node/config.toml")
    os.makedirs(os.path.dirname(config))
    a = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n'
    with open(config, "w") as fh:
        fh.write(a)
    found = samples(run_cli("metrics", "-o", "-", root=host.root).stdout)
    assert (value(found, "applied_generation"), value(found, "config_differs")) == (0, 1)  # nothing applied yet
    assert value(found, "converged") == 0
    assert run_cli("apply", root=host.root).returncode == 0
    with open(config, "w") as fh:
        fh.write(a.replace("num_vfs = 4", "num_vfs = 2"))  # edited, not applied

    text = run_cli("metrics", "-o", "-", root=host.root).stdout
    status = json.loads(run_cli("status", "--json", root=host.root).stdout)

    found = samples(text)
    assert status["converged"] is True and status["config_differs"] is True
    assert value(found, "converged") == 1  # as status: the host is what generation 1 wants
    assert value(found, "pf_vfs_desired", pf=PF0, name="ens1f0", block="pf[0]") == 4
    assert (value(found, "applied_generation"), value(found, "config_differs")) == (1, 1)
    assert (value(found, "checkpoint_pending"), value(found, "checkpoint_overdue")) == (0, 0)
    _promtool_ok(text, tmp_path)

    assert run_cli("apply", "--checkpoint", "0.001", root=host.root).returncode == 0  # generation 2, overdue at once
    text = run_cli("metrics", "-o", "-", root=host.root).stdout
    found = samples(text)
    assert (value(found, "applied_generation"), value(found, "config_differs")) == (2, 0)
    assert (value(found, "checkpoint_pending"), value(found, "checkpoint_overdue")) == (1, 1)
    assert value(found, "converged") == 1 and value(found, "pf_vfs_desired", pf=PF0, name="ens1f0", block="pf[0]") == 2
    _promtool_ok(text, tmp_path)


def test_the_daemons_textfile_carries_the_generation_families(host, write_config):
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    path = write_config(CONFIG.split('[[pf]]\nname = "ens9f0"')[0])
    prom = os.path.join(host.root, "var/lib/node_exporter/textfile/sriov_node.prom")
    os.makedirs(os.path.dirname(prom))
    assert run_cli("apply", root=host.root, config=path).returncode == 0
    assert run_cli("apply", "--checkpoint", "0.001", root=host.root, config=write_config(CONFIG.split(
        '[[pf]]\nname = "ens9f0"')[0].replace("num_vfs = 4", "num_vfs = 3"))).returncode == 0
    d = Daemon(host, path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    d.desired = load_desired(host, path)
    d._write_metrics(d.desired)
    found = samples(open(prom).read())
    assert value(found, "applied_generation") == 2 and value(found, "config_differs") == 1
    assert (value(found, "checkpoint_pending"), value(found, "checkpoint_overdue")) == (1, 1)
