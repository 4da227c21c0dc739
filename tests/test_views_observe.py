"""Views read nothing: what a run writes after it (the device plugin's config.json) is built from the
run's own reading of the host (`Report.view`: the survey's judgement of each PF it did not change,
the verification's of each it changed), not from a second survey. Counted through the public
engine entry point on the simulated host."""

from __future__ import annotations

import json
import os

import pytest

from sriov_node.config import load_config
from sriov_node.engine import survey as survey_module
from sriov_node.engine import reconcile as reconcile_module
from tests.helpers import PF0, open_host
from tests.test_kubernetes_plugin_config import PLUGIN_FILE, layout


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), iommu=True)


def count_surveys(monkeypatch):
    calls = []
    real = survey_module.survey

    def counted(*args, **kwargs):
        calls.append(kwargs.get("only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(survey_module, "survey", counted)  # what a view's own survey would call
    monkeypatch.setattr(reconcile_module, "survey", counted)
    return calls


@pytest.mark.parametrize("runs", [1, 2], ids=["changing", "converged"])
def test_a_run_surveys_once_and_the_device_plugin_file_comes_from_it(host, write_config, monkeypatch, runs):
    path = write_config(layout())
    for _ in range(runs - 1):
        reconcile_module.reconcile(open_host(host.root), load_config(path))
    calls = count_surveys(monkeypatch)
    report = reconcile_module.reconcile(open_host(host.root), load_config(path))
    assert report.view is not None and report.view.converged
    assert len(calls) == 1, calls
    with open(os.path.join(host.root, PLUGIN_FILE.lstrip("/"))) as f:
        written = json.load(f)
    # the same file a fresh survey makes (export device-plugin)
    from sriov_node.engine.device_plugin import device_plugin_config

    assert written == device_plugin_config(open_host(host.root), load_config(path), allow_empty=True).config


def test_a_per_pf_run_has_no_whole_host_view(host, write_config):
    path = write_config(layout())
    report = reconcile_module.reconcile(open_host(host.root), load_config(path),
                                        only=frozenset({PF0}))
    assert report.view is None


def _daemon(host, path):
    import logging

    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    d = Daemon(open_host(host.root), path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    assert d._start() == 0
    return d


def test_the_daemon_writes_metrics_from_its_runs_without_surveying_again(host, write_config, monkeypatch):
    """Every PF run (the daemon's start): the metrics come from the run's view; a per-PF run (an
    event): from its report's read-back states and the metrics kept; no survey of its own either way."""
    # no [device_plugin] config_file: after a per-PF run that one still surveys the host (docs/design.md)
    text = layout().replace(f'config_file = "{PLUGIN_FILE}"\n', "")
    text += '\n[metrics]\ntextfile = "/var/lib/prometheus/node-exporter/sriov_node.prom"\n'
    path = write_config(text)
    os.makedirs(os.path.join(host.root, "var/lib/prometheus/node-exporter"))  # the exporter's package makes it
    d = _daemon(host, path)
    calls = count_surveys(monkeypatch)
    d.run_once(None)
    assert len(calls) == 1, calls
    prom = os.path.join(host.root, "var/lib/prometheus/node-exporter/sriov_node.prom")
    with open(prom) as f:
        first = f.read()
    assert "sriov_node_converged 1" in first
    open_host(host.root).sysfs.set_num_vfs(PF0, 0)  # by hand: the event's run puts the VFs back
    calls.clear()
    d.run_once(frozenset({PF0}))
    assert len(calls) == 1, calls
    with open(prom) as f:
        again = f.read()
    assert "sriov_node_converged 1" in again
    assert [line for line in again.splitlines() if "numvfs" in line] == \
           [line for line in first.splitlines() if "numvfs" in line]


def test_progress_on_a_terminal_surveys_nothing_of_its_own(host, write_config, monkeypatch):
    """The progress lines take each PF's block from the engine (the target it judged): an apply
    drawn on a terminal surveys the host once, as one that is not drawn."""
    import io

    from sriov_node.views.progress import terminal_progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    desired = load_config(write_config(layout().replace(f'config_file = "{PLUGIN_FILE}"\n', "")))
    calls = count_surveys(monkeypatch)
    screen = Terminal()
    h = open_host(host.root)
    with terminal_progress(h, desired, stream=screen) as progress:
        report = reconcile_module.reconcile(h, desired, progress=progress)
    assert report.exit_code == 0
    assert len(calls) == 1, calls
    assert "VFs 4/4 created, 4/4 bound as configured" in screen.getvalue()


def test_the_daemon_learns_each_vfs_pf_from_the_runs_read_back(host, write_config, monkeypatch):
    """Which PF a VF belongs to (for its uevents once it is gone) comes from the run's read-back states."""
    path = write_config(layout().replace(f'config_file = "{PLUGIN_FILE}"\n', ""))
    d = _daemon(host, path)
    report = d.run_once(None)
    reads = []
    for name in ("listdir", "link_name", "read", "exists"):
        real = getattr(d.host.sysfs, name)
        monkeypatch.setattr(d.host.sysfs, name, lambda *a, _real=real, _name=name, **k: reads.append(_name) or _real(*a, **k))
    d.known_vfs.clear()
    d._learn_vfs(report)
    assert reads == []
    h = open_host(host.root)
    expected = {h.sysfs.vf_address(pf, i): pf for pf, n in ((PF0, 4), ("0000:20:00.1", 2)) for i in range(n)}
    assert d.known_vfs == expected


def test_validate_surveys_the_host_once(host, write_config, monkeypatch):
    """`validate` judges the plans as apply's dry run does, on that run's one survey."""
    from sriov_node.cli import main

    path = write_config(layout())
    calls = count_surveys(monkeypatch)
    monkeypatch.setattr("sys.argv", ["sriov-node", "--root", host.root, "--config", path, "validate"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert len(calls) == 1, calls
