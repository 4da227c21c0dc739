"""The agent's pod on a real kernel: deploy/kubernetes/entrypoint.sh in a mount namespace with the guest's root at
/host (tests/lab/guest_kubernetes.py). It converges the node from its ConfigMap key, the readiness probe
(status --exit-code) passes, the device-plugin file appears only once the VFs are as configured, and SIGTERM
stops the agent cleanly; lock, state and generations are the host's."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from tests.lab.conftest import boot

SMALL = "0000:01:00.0"


@pytest.fixture(scope="module")
def pod() -> Dict[str, Any]:
    return boot("pod", "tests/lab/guest_kubernetes.py")


def test_the_pod_converges_the_node_and_becomes_ready(pod):
    assert pod["exited_early"] is None, pod["log"]
    assert pod["ready_seconds"] is not None, (pod["probes"], pod["log"])
    assert [d for _, d in pod["vfs_ready"]] == ["vfio-pci"] * 4
    assert "key lab-node-1.toml" in pod["log"]
    print(f"pod start to ready (guest, TCG): {pod['ready_seconds']} s")


def test_the_hosts_config_lock_and_generations_are_the_pods(pod):
    assert pod["host_config"] is not None and 'config_file = "/run/sriov-node/device-plugin/config.json"' in pod["host_config"]
    gens = json.loads(pod["history"]["stdout"])["generations"]
    assert [(g["command"], g["outcome"]) for g in gens][:1] == [("apply", "converged")]
    assert gens[0]["config_path"] == "/etc/sriov-node/config.toml"  # the same path on the host and in the pod
    assert "apply.lock" in pod["host_run"] and pod["agent_pid"] == str(pod["pod_pid"])  # hostPID: one pid
    assert pod["pod_run"]["rc"] == 0 and "sriov-node" not in pod["pod_run"]["stdout"].split()  # the pod's own /run
    assert pod["host_status"]["rc"] == 0, pod["host_status"]


def test_the_plugin_config_appears_only_after_convergence(pod):
    watch = pod["watch"]
    assert watch["file_while_differs"] == [], watch
    assert [d for _, d in watch["first_file_vfs"]] == ["vfio-pci"] * 4, watch
    assert watch["differs_without_file"] > 0  # the watcher saw the node differ before: the order was observed
    assert pod["plugin_config"] == {"resourceList": []}  # NVMe VFs: nothing the plugin could discover


def test_sigterm_stops_the_agent_cleanly(pod):
    assert pod["term_rc"] == 0, pod["log"][-3000:]
    assert pod["agent_pid_after"] is False
    assert pod["vfs_after_stop"] == pod["vfs_ready"]  # stopping the agent leaves the VFs as they are
    print(f"SIGTERM to exit (guest, TCG): {pod['term_seconds']} s")


def test_a_host_checkpoint_is_expired_by_the_pods_agent_and_the_plugin_file_follows(pod):
    cp = pod["checkpoint"]
    assert cp["rc"] == 0, cp
    assert f"the agent daemon (pid {pod['pod_pid']})" in cp["stdout"] + cp["stderr"]  # hostPID: the pod's pid
    assert [d for _, d in pod["after_checkpoint"]] == ["vfio-pci"] * 2
    assert [d for _, d in pod["after_rollback"]] == ["vfio-pci"] * 4, pod["log"][-3000:]
    assert pod["config_after_rollback"] == pod["config_before_checkpoint"]  # the file the pod installed, restored
    history = json.loads(pod["history_after_rollback"]["stdout"])["generations"]
    assert [g["command"] for g in history] == ["apply", "apply", "checkpoint-expired"], history
    assert pod["pod_ready_after_rollback"] == 0
    # every content the file had appeared while the kernel showed a converged layout (NVMe VFs: the
    # plugin cannot discover them, so the list is empty and its bytes do not change with the layout)
    assert pod["contents"], pod["log"][-3000:]
    for c in pod["contents"]:
        assert c["named"] == 0 and len(c["vfs"]) in (2, 4) and all(d == "vfio-pci" for _, d in c["vfs"]), c
    print(f"apply --checkpoint 20 to rolled back by the pod's agent (guest, TCG): {pod['rolled_back_seconds']} s")
