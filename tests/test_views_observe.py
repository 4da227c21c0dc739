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
from tests.helpers import PF0, PF1, open_host
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


def count_pf_reads(monkeypatch):
    """Each read of one PF (`observe_pf`: the heads resolution needs, a target's VFs, a verification)."""
    from sriov_node.host import observe as observe_module

    calls = []
    real = observe_module.observe_pf

    def counted(host, pci, **kwargs):
        calls.append((pci, kwargs.get("with_vfs", True) or kwargs.get("want") is not None))
        return real(host, pci, **kwargs)

    monkeypatch.setattr(observe_module, "observe_pf", counted)
    monkeypatch.setattr(survey_module, "observe_pf", counted)
    return calls


def test_a_per_pf_run_writes_the_device_plugin_file_from_its_one_survey(host, write_config, monkeypatch):
    """A per-PF run (the daemon's on an event) with a [device_plugin] config_file reads the other
    targets in its own survey: one survey, each PF read once for resolution and each target once,
    the run's PF once more for its verification; the file is what a fresh survey makes."""
    from sriov_node.engine.device_plugin import device_plugin_config

    path = write_config(layout())
    reconcile_module.reconcile(open_host(host.root), load_config(path))
    os.remove(os.path.join(host.root, PLUGIN_FILE.lstrip("/")))
    open_host(host.root).sysfs.set_num_vfs(PF0, 0)  # by hand: the per-PF run puts the VFs back
    calls = count_surveys(monkeypatch)
    reads = count_pf_reads(monkeypatch)
    report = reconcile_module.reconcile(open_host(host.root), load_config(path), only=frozenset({PF0}))
    assert report.exit_code == 0 and [o.pci for o in report.outcomes] == [PF0]
    assert len(calls) == 1, calls
    heads = [pci for pci, vfs in reads if not vfs]
    deep = sorted(pci for pci, vfs in reads if vfs)
    assert sorted(heads) == [PF0, PF1], reads  # the heads: each PF once
    assert deep == sorted([PF0, PF0, PF1]), reads  # each target once, the run's PF once more (verified)
    assert report.view is not None and report.view.converged
    assert "wrote the device plugin config" in (report.device_plugin or "")
    with open(os.path.join(host.root, PLUGIN_FILE.lstrip("/"))) as f:
        written = json.load(f)
    assert written == device_plugin_config(open_host(host.root), load_config(path), allow_empty=True).config


def test_a_per_pf_run_without_a_device_plugin_file_reads_only_its_pfs(host, write_config, monkeypatch):
    """No config_file: nothing is built from the other PFs, so their VFs are not read (no view)."""
    path = write_config(layout().replace(f'config_file = "{PLUGIN_FILE}"\n', ""))
    reconcile_module.reconcile(open_host(host.root), load_config(path))
    reads = count_pf_reads(monkeypatch)
    report = reconcile_module.reconcile(open_host(host.root), load_config(path), only=frozenset({PF0}))
    assert report.view is None
    assert [pci for pci, vfs in reads if vfs] == [PF0]


def test_a_per_pf_run_writes_no_file_while_another_pf_differs(host, write_config):
    """The file stays of the whole node: a PF beside the run that differs keeps it unwritten."""
    path = write_config(layout())
    reconcile_module.reconcile(open_host(host.root), load_config(path))
    os.remove(os.path.join(host.root, PLUGIN_FILE.lstrip("/")))
    open_host(host.root).sysfs.set_num_vfs(PF1, 0)
    report = reconcile_module.reconcile(open_host(host.root), load_config(path), only=frozenset({PF0}))
    assert report.exit_code == 0
    assert "not written: the node differs" in (report.device_plugin or "")
    assert not os.path.exists(os.path.join(host.root, PLUGIN_FILE.lstrip("/")))


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
    text = layout()  # with a [device_plugin] config_file: a per-PF run builds it from its own survey too
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
    expected = {h.sysfs.vf_address(pf, i): pf for pf, n in ((PF0, 4), (PF1, 2)) for i in range(n)}
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


def test_set_reads_the_pfs_once_and_only_the_vfs_its_run_reads(host, write_config, monkeypatch):
    """`set` finds the block its PF reference means (here by name, the block selects by address) from
    one read of the PFs, none of their VFs: the only survey is its run's, of the PF it edited."""
    from sriov_node.cli import main

    path = write_config(layout().replace(f'config_file = "{PLUGIN_FILE}"\n', ""))
    reconcile_module.reconcile(open_host(host.root), load_config(path))
    calls = count_surveys(monkeypatch)
    reads = count_pf_reads(monkeypatch)
    monkeypatch.setattr("sys.argv", ["sriov-node", "--root", host.root, "--config", path, "set", "ens1f0", "mtu=9000"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    with open(path) as f:
        assert "mtu = 9000" in f.read()
    assert len(calls) == 1, calls
    assert [pci for pci, vfs in reads if vfs] == [PF0, PF0], reads  # the run's survey and its verification
    # set's read of the PFs (its reference may be any of them), then its run's, of the PF it edited
    # only (`survey.narrowed`)
    assert [pci for pci, vfs in reads if not vfs] == [PF0, PF1, PF0], reads


ACCELERATOR_LAYOUT = f"""
[device_plugin]
config_file = "{PLUGIN_FILE}"

[[pf]]
pci = "0000:20:00.0"
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  driver = "hisi_zip"
  resource = "zip"
"""


@pytest.mark.parametrize("nics,text,only", [
    # every selector the file holds: IDs, class (netDevice), link types, isRdma, needVhostNet
    ((("x710", 1, None), ("cx6-ib", 1, None), ("cx5", 1, None)), "selectors", None),
    ((("x710", 1, None), ("cx6-ib", 1, None), ("cx5", 1, None)), "selectors", "0000:30:00.0"),  # a per-PF run
    ((("hisi-zip", 1, None),), ACCELERATOR_LAYOUT, None),  # class 0x12: accelerator, VF addresses
], ids=["every-selector", "every-selector-per-pf", "accelerator"])
def test_the_device_plugin_file_asks_the_host_nothing_of_its_own(make_host, write_config, monkeypatch, nics, text,
                                                                   only):
    """What the plugin's selectors match (each VF's IDs and class, the PF's link type, each VF's RDMA
    devices, /dev/vhost-net) is read by the run's one observation: building the file from the run's
    view asks the host's capabilities nothing, and the file is what a fresh export makes."""
    from sriov_node.engine import device_plugin as device_plugin_module
    from tests.helpers import count_host_calls
    from tests.test_plugin_selectors import LAYOUT

    host = make_host(*nics, iommu=True)
    os.makedirs(os.path.join(host.root, "dev"), exist_ok=True)
    with open(os.path.join(host.root, "dev", "vhost-net"), "w"):
        pass  # the plugin mounts it where it exists: the note about its absence is not the point here
    path = write_config(LAYOUT if text == "selectors" else text)
    desired = load_config(path)
    if only:
        reconcile_module.reconcile(open_host(host.root), desired)
        os.remove(os.path.join(host.root, PLUGIN_FILE.lstrip("/")))
        open_host(host.root).sysfs.set_num_vfs(only, 0)  # by hand: the per-PF run puts the VFs back
    h = open_host(host.root)
    calls = count_host_calls(h)
    during: list = []
    real = device_plugin_module.device_plugin_config

    def counted(*args, **kwargs):
        start = len(calls)
        try:
            return real(*args, **kwargs)
        finally:
            during.extend(calls[start:])

    monkeypatch.setattr(device_plugin_module, "device_plugin_config", counted)
    report = reconcile_module.reconcile(h, desired, only=frozenset({only}) if only else None)
    assert report.exit_code == 0, report
    assert "wrote the device plugin config" in (report.device_plugin or ""), report.device_plugin
    assert calls and during == [], during
    with open(os.path.join(host.root, PLUGIN_FILE.lstrip("/"))) as f:
        written = json.load(f)
    assert written == real(open_host(host.root), desired, allow_empty=True).config
    assert written["resourceList"]


def _pf_removed(h):
    h.sysfs.write("sys/bus/pci/devices", (PF0, "remove"), "1\n")


def _pf_driver_unbound(h):
    h.sysfs.write("sys/bus/pci/drivers", (h.sysfs.pf_driver(PF0), "unbind"), PF0)


@pytest.mark.parametrize("leave", [_pf_removed, _pf_driver_unbound], ids=["removed", "driver-unbound"])
def test_a_pf_that_leaves_during_a_run_keeps_the_device_plugin_file_unwritten(host, write_config, monkeypatch, leave):
    """A PF gone (or its driver gone) before its read-back: the run fails that PF, nothing of it
    reported changed; the file is not written (no second survey), and the next converged run
    (once the PF is back) writes it."""
    from sriov_node.engine.execute import Executor

    path = write_config(layout())
    plugin = os.path.join(host.root, PLUGIN_FILE.lstrip("/"))
    real = Executor.settle

    def leaves(self, pf):
        errors = real(self, pf)
        if pf == PF0:  # between its plan and its read-back
            leave(open_host(host.root))
        return errors

    monkeypatch.setattr(Executor, "settle", leaves)
    calls = count_surveys(monkeypatch)
    report = reconcile_module.reconcile(open_host(host.root), load_config(path))
    assert report.exit_code != 0
    assert [o.status.value for o in report.outcomes if o.pci == PF0] == ["failed"]
    assert len(calls) == 1, calls
    if leave is _pf_removed:
        assert report.view is None
        assert "left during the run (removed or unplugged)" in report.outcomes[0].error
        assert "not written: a PF left during the run" in (report.device_plugin or ""), report.device_plugin
        assert report.device_plugin in report.notices
    else:  # read back without its driver: a node that differs
        assert "not written: the node differs" in (report.device_plugin or ""), report.device_plugin
    assert not os.path.exists(plugin)
    monkeypatch.setattr(Executor, "settle", real)
    h = open_host(host.root)
    if leave is _pf_removed:
        h.sysfs.write("sys/bus/pci", ("rescan",), "1\n")  # it comes back, as at boot
    else:
        h.sysfs.write("sys/bus/pci/drivers_probe", (), PF0)
    again = reconcile_module.reconcile(open_host(host.root), load_config(path))
    assert again.exit_code == 0 and "wrote the device plugin config" in (again.device_plugin or "")
    assert os.path.exists(plugin)
