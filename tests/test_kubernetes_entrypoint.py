"""deploy/kubernetes/entrypoint.sh on a simulated host as the pod's /host: the node's ConfigMap key (else
default.toml) validated, installed as the host's config, applied as a generation, then the agent until SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import open_host
from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, PF1, run_cli

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "deploy" / "kubernetes" / "entrypoint.sh"
PLUGIN = "/run/sriov-node/device-plugin/config.json"


def block(pf: str, n: int) -> str:
    return (f'[[pf]]\npci = "{pf}"\nnum_vfs = {n}\n  [[pf.vfs]]\n  range = "0-{n - 1}"\n  driver = "iavf"\n'
            f'  resource = "netdev"\n')


HEAD = f'[device_plugin]\nconfig_file = "{PLUGIN}"\n\n'
DEFAULT = HEAD + block(PF0, 2)
NODE = HEAD + block(PF0, 4) + block(PF1, 2)


@pytest.fixture
def pod(make_host, tmp_path):
    """A simulated host (/host), the ConfigMap's mount, and the host's config path as the pod sees it."""
    host = make_host(("x710", 2, None))
    configmap = tmp_path / "configmap"
    configmap.mkdir()
    (configmap / "default.toml").write_text(DEFAULT)
    (configmap / "worker-1.toml").write_text(NODE)
    config = os.path.join(host.root, "etc/sriov-node/config.toml")
    return host, configmap, config


class Entrypoint:
    def __init__(self, host, configmap, config, tmp_path, node="worker-1"):
        self.notify = os.path.join(tempfile.mkdtemp(dir=str(tmp_path)), "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify)
        self.ready = threading.Event()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_NODE_", "JOURNAL_STREAM"))}
        env.update(PATH=f"{os.path.dirname(sys.executable)}:{env.get('PATH', '/usr/bin:/bin')}",
                   SRIOV_NODE_ROOT=host.root, SRIOV_NODE_CONFIGS=str(configmap), SRIOV_NODE_CONFIG=config,
                   NOTIFY_SOCKET=self.notify)
        if node is not None:
            env["NODE_NAME"] = node
        self.proc = subprocess.Popen(["sh", str(ENTRYPOINT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.out = []
        threading.Thread(target=self._notify, daemon=True).start()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _notify(self):
        while True:
            data = self.sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                self.ready.set()

    def _read(self):
        for line in self.proc.stdout:
            self.out.append(line)

    def text(self):
        return "".join(self.out)

    def wait_for(self, words):
        self.until(lambda: words in self.text(), words)

    def until(self, predicate, what):
        """Wait for `predicate` while the entrypoint runs (a guard of 120 s against a hang, not a measure)."""
        for _ in range(2400):
            if predicate():
                return
            assert self.proc.poll() is None, f"exited {self.proc.returncode} waiting for {what}\n{self.text()}"
            time.sleep(0.05)
        raise AssertionError(f"still waiting for {what}\n{self.text()}")

    def wait_ready(self):
        while not self.ready.wait(0.5):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}\n{self.text()}"

    def wait(self, timeout):
        """The exit code, once the output is all read."""
        code = self.proc.wait(timeout)
        self.reader.join(timeout)
        return code

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(60)


def history(host, config):
    proc = run_cli("history", "--json", root=host.root, config=config)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["generations"]


def test_the_nodes_key_is_installed_applied_as_a_generation_and_the_agent_stops_on_sigterm(pod, tmp_path):
    host, configmap, config = pod
    ep = Entrypoint(host, configmap, config, tmp_path)
    ep.wait_ready()
    assert "desired state from the ConfigMap's key worker-1.toml" in ep.text()
    with open(config) as fh:
        assert fh.read() == NODE
    gens = history(host, config)
    assert [(g["command"], g["outcome"]) for g in gens] == [("apply", "converged")]
    assert run_cli("status", "--exit-code", root=host.root, config=config).returncode == 0  # the readiness probe
    with open(os.path.join(host.root, PLUGIN.lstrip("/"))) as fh:
        plugin = json.load(fh)
    assert {r["resourceName"] for r in plugin["resourceList"]} == {"netdev"}
    assert ep.stop() == 0, ep.text()
    assert not os.path.exists(os.path.join(host.root, "run/sriov-node/agent.pid"))


def test_a_node_without_a_key_gets_the_default_and_a_restart_records_nothing_new(pod, tmp_path):
    host, configmap, config = pod
    ep = Entrypoint(host, configmap, config, tmp_path, node="worker-2")
    ep.wait_ready()
    assert "key default.toml" in ep.text()
    assert ep.stop() == 0
    with open(config) as fh:
        assert fh.read() == DEFAULT
    again = Entrypoint(host, configmap, config, tmp_path, node="worker-2")
    again.wait_ready()
    assert again.stop() == 0
    assert len(history(host, config)) == 1  # the same bytes, converged: no new generation


def test_a_new_key_replaces_the_hosts_config_keeping_the_old_one(pod, tmp_path):
    host, configmap, config = pod
    os.makedirs(os.path.dirname(config))
    with open(config, "w") as fh:
        fh.write(DEFAULT)
    assert run_cli("apply", root=host.root, config=config).returncode == 0  # the host's own units applied it
    ep = Entrypoint(host, configmap, config, tmp_path)
    ep.wait_ready()
    assert ep.stop() == 0
    with open(config + ".bak") as fh:
        assert fh.read() == DEFAULT
    assert [g["command"] for g in history(host, config)] == ["apply", "apply"]
    assert not [n for n in os.listdir(os.path.dirname(config)) if n.startswith(".")]  # no temporary left


@pytest.mark.parametrize("text,code,words", [
    (HEAD + block("0000:99:00.0", 2), 1, "does not fit this host"),
    (HEAD + '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = "four"\n', 2, "is not a valid config"),
])
def test_a_key_that_does_not_fit_or_is_invalid_fails_the_pod_with_nothing_written(pod, tmp_path, text, code, words):
    host, configmap, config = pod
    (configmap / "worker-1.toml").write_text(text)
    ep = Entrypoint(host, configmap, config, tmp_path)
    assert ep.wait(120) == code, ep.text()
    assert words in ep.text()
    assert not os.path.exists(config)
    assert not os.path.exists(os.path.join(host.root, "var/lib/sriov-node/generations"))
    assert run_cli("status", "--exit-code", root=host.root, config=config).returncode == 1


def test_without_node_name_or_a_matching_key_it_exits_2(pod, tmp_path):
    host, configmap, config = pod
    assert Entrypoint(host, configmap, config, tmp_path, node=None).wait(60) == 2
    (configmap / "default.toml").unlink()
    ep = Entrypoint(host, configmap, config, tmp_path, node="worker-9")
    assert ep.wait(60) == 2
    assert "neither worker-9.toml nor default.toml" in ep.text()
    assert not os.path.exists(config)


def test_sigterm_before_the_agent_starts_stops_the_apply_and_exits_143(pod, tmp_path):
    """The kubelet may stop the pod while the entrypoint still applies: the signal reaches the apply, no agent starts."""
    host, configmap, config = pod
    SimKernel(host.root).add_fault("delay", device=PF0, attr="sriov_numvfs", seconds=5)
    ep = Entrypoint(host, configmap, config, tmp_path)
    ep.wait_for("installed worker-1.toml")  # the apply runs now (its first write waits on the delay)
    assert ep.stop() == 143, ep.text()
    assert "the agent is not started" in ep.text()
    assert not ep.ready.is_set()
    assert not os.path.exists(os.path.join(host.root, "run/sriov-node/agent.pid"))


def test_the_agent_writes_the_plugin_file_again_once_it_repaired_the_node(pod, tmp_path):
    """The daemon's runs write the file too: after a PF driver reload took the VFs away, once they are back."""
    host, configmap, config = pod
    ep = Entrypoint(host, configmap, config, tmp_path)
    ep.wait_ready()
    path = os.path.join(host.root, PLUGIN.lstrip("/"))
    with open(path) as fh:
        before = fh.read()
    os.unlink(path)
    h = open_host(host.root)
    h.sysfs.unbind(PF0, "i40e")  # as a driver reload does: the VFs go
    h.sysfs.drivers_probe(PF0)
    ep.until(lambda: os.path.exists(path), "the plugin file written again")
    assert h.sysfs.num_vfs(PF0) == 4  # written once the VFs were back
    with open(path) as fh:
        assert fh.read() == before
    ep.wait_for("sriov-node: wrote the device plugin config")  # the daemon's log, not the entrypoint's apply
    assert ep.stop() == 0
