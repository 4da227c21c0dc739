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
