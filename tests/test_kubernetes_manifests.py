"""deploy/kubernetes/: the manifests validate against the Kubernetes API schema offline (kubernetes-validate
--strict), and say what the agent and the device plugin need of each other."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sriov_node.config import parse_config

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
VALIDATE = shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) or "kubernetes-validate"


def validate(*files: str, version: str = "") -> subprocess.CompletedProcess:
    args = [VALIDATE, "--strict", *(["--kubernetes-version", version] if version else []), *files]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def docs():
    out = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def pod(name):
    return docs()[("DaemonSet", name)]["spec"]["template"]["spec"]


def agent():
    return pod("sriov-node")["containers"][0]


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_every_manifest_validates_strictly(version):
    proc = validate(*map(str, MANIFESTS), version=version)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == sum(len(docs_in(p)) for p in MANIFESTS)


def docs_in(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_strict_validation_refuses_an_unknown_field(tmp_path):
    """The check above is worth something: a misspelt field fails it."""
    bad = tmp_path / "bad.yaml"
    bad.write_text((DEPLOY / "20-sriov-node-agent.yaml").read_text().replace("hostPID: true", "hostPid: true"))
    proc = validate(str(bad))
    assert proc.returncode != 0 and "hostPid" in proc.stdout + proc.stderr


def test_the_agent_runs_privileged_on_the_hosts_root_network_and_pids():
    spec = pod("sriov-node")
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert agent()["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in agent()["volumeMounts"]}
    assert mounts["/host"]["hostPath"]["path"] == "/"
    # the host's /etc/sriov-node at the same path: generations name the same config file in the pod and on the host
    assert mounts["/etc/sriov-node"]["hostPath"]["path"] == "/etc/sriov-node"
    env = {e["name"]: e for e in agent()["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["SRIOV_NODE_ROOT"]["value"] == "/host"
    assert env["SRIOV_NODE_CONFIG"]["value"] == "/etc/sriov-node/config.toml"
    assert mounts[env["SRIOV_NODE_CONFIGS"]["value"]]["configMap"]["name"] == "sriov-node-config"


def test_readiness_is_status_exit_code_on_the_hosts_root():
    cmd = agent()["readinessProbe"]["exec"]["command"]
    assert cmd[0] == "sriov-node" and cmd[-2:] == ["status", "--exit-code"]
    assert cmd[cmd.index("--root") + 1] == "/host"
    assert cmd[cmd.index("--config") + 1] == "/etc/sriov-node/config.toml"


def test_a_rolling_update_with_a_failure_budget():
    ds = docs()[("DaemonSet", "sriov-node")]["spec"]
    assert ds["updateStrategy"]["type"] == "RollingUpdate"
    assert ds["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == 1


def _mib(quantity: str) -> float:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert m, quantity
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def test_resource_requests_cover_the_benchmarked_idle_daemon():
    """docs/benchmarks.md (scripts/bench): the idle daemon's RSS and peak RSS of a large run."""
    bench = (REPO / "docs" / "benchmarks.md").read_text()
    idle = float(re.search(r"\| idle daemon \| RSS \| ([\d.]+) MB", bench).group(1))
    peak = max(float(x) for x in re.findall(r"\| peak RSS, [^|]+\| ([\d.]+) MB", bench))
    resources = agent()["resources"]
    request, limit = _mib(resources["requests"]["memory"]), _mib(resources["limits"]["memory"])
    assert idle * 1e6 <= request * 2 ** 20 < 2 * idle * 1e6  # sized from the figure, not padded
    assert limit * 2 ** 20 >= 2 * peak * 1e6
    assert resources["requests"]["cpu"] == "10m"  # 0 wake-ups a minute when idle


def test_every_configmap_key_is_a_valid_config_that_feeds_the_plugins_mount():
    data = docs()[("ConfigMap", "sriov-node-config")]["data"]
    assert "default.toml" in data
    plugin = pod("sriov-device-plugin")
    volumes = {v["name"]: v for v in plugin["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in plugin["containers"][0]["volumeMounts"]}
    for key, text in data.items():
        assert key.endswith(".toml")
        desired = parse_config(text.encode(), key)
        assert desired.resources(), key
        path = desired.device_plugin_file
        assert mounts["/etc/pcidp"]["hostPath"]["path"] == os.path.dirname(path), key
        assert os.path.basename(path) == "config.json"


def test_the_plugin_waits_for_the_file_and_restarts_when_it_changes():
    container = pod("sriov-device-plugin")["containers"][0]
    script = container["args"][0]
    wait, copy, start = [line.split("#")[0].strip() for line in script.strip().splitlines()]
    assert wait.startswith("until [ -s /etc/pcidp/config.json ]")
    assert copy == "cp /etc/pcidp/config.json /run/sriovdp/config.json"
    assert start.startswith("exec sriovdp") and "--config-file=/run/sriovdp/config.json" in start
    probe = container["livenessProbe"]["exec"]["command"][-1]
    assert "cmp -s /etc/pcidp/config.json /run/sriovdp/config.json" in probe


def test_the_liveness_probe_fails_only_once_the_agent_wrote_another_file(tmp_path):
    """The probe's command, run by sh against files in a temporary tree: same file 0, a new file 1, waiting 0."""
    probe = pod("sriov-device-plugin")["containers"][0]["livenessProbe"]["exec"]["command"][-1]
    probe = probe.replace("/etc/pcidp", str(tmp_path / "pcidp")).replace("/run/sriovdp", str(tmp_path / "started"))
    (tmp_path / "pcidp").mkdir()
    (tmp_path / "started").mkdir()

    def run():
        return subprocess.run(["sh", "-c", probe]).returncode

    assert run() == 0  # still waiting for the agent: alive
    (tmp_path / "pcidp" / "config.json").write_text('{"resourceList": []}\n')
    shutil.copy(tmp_path / "pcidp" / "config.json", tmp_path / "started" / "config.json")
    assert run() == 0
    (tmp_path / "pcidp" / "config.json").write_text('{"resourceList": [{"resourceName": "dpdk"}]}\n')
    assert run() == 1


def test_the_image_runs_the_entrypoint_the_daemonset_names():
    containerfile = (DEPLOY / "Containerfile").read_text()
    m = re.search(r"^COPY deploy/kubernetes/entrypoint.sh (\S+)$", containerfile, re.M)
    assert m and agent()["command"] == [m.group(1)]
    assert re.search(r"^COPY dist/sriov-node_\*_all.deb ", containerfile, re.M)  # from the Debian package
