"""`sriov-node export device-plugin --node NAME [--merge FILE]`: one ConfigMap for the cluster with a key per node
(the device plugin reads /etc/pcidp/$(NODE_NAME)), merged into the ConfigMap the cluster already has."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import PF0, run_cli

CONFIG = f"""
[device_plugin]
resource_prefix = "example.org"

[[pf]]
pci = "{PF0}"
num_vfs = 4
  [[pf.vfs]]
  range = "0-3"
  driver = "iavf"
  resource = "netdev"
"""
# Another node's key as the API server hands it back: kept byte for byte, whatever its layout
OTHER = '{\n  "resourceList": [\n    {\n      "resourceName": "other"\n    }\n  ]\n}\n'
ODD = {"trailing-spaces": "a  \nb\n", "no-newline": "{}", "tabs\tkey": "\tx\n", "blank-lines": "a\n\n\n",
       "leading-space": "  indented\n", "unicode": "caf\u00e9 \u2603\n", "empty": "", "crlf": "a\r\nb\r\n"}
EXISTING = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "device-plugin-config", "namespace": "sriov", "resourceVersion": "4711",
                 "uid": "0b1c", "labels": {"app": "sriovdp"}, "annotations": {"note": "a: b # c"}},
    "data": {"node-a": OTHER, "node-b": "stale\n", **ODD},
}


@pytest.fixture
def host(make_host, write_config):
    host = make_host(("x710", 1, None))
    config = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    host.config = config
    return host


def export(host, *args):
    return run_cli("export", "device-plugin", *args, root=host.root, config=host.config)


def node_json(host):
    proc = export(host, "--json-only")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_node_key_in_a_new_configmap(host):
    proc = export(host, "--node", "node-b")
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load(proc.stdout)
    assert cm["metadata"] == {"name": "sriovdp-config", "namespace": "kube-system"}
    assert cm["data"] == {"node-b": node_json(host)}


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_merge_replaces_only_the_nodes_key(host, tmp_path, as_json):
    existing = tmp_path / "cm.yaml"
    existing.write_text(json.dumps(EXISTING) if as_json else yaml.safe_dump(EXISTING, sort_keys=False))
    proc = export(host, "--node", "node-b", "--merge", str(existing))
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load(proc.stdout)
    assert cm["metadata"] == {"name": "device-plugin-config", "namespace": "sriov", "labels": {"app": "sriovdp"},
                              "annotations": {"note": "a: b # c"}}  # no resourceVersion: kubectl apply takes it
    assert cm["data"] == {**EXISTING["data"], "node-b": node_json(host)}
    assert list(cm["data"]) == list(EXISTING["data"])  # the order kept


def test_a_new_node_is_added_and_merging_again_changes_nothing(host, tmp_path):
    existing = tmp_path / "cm.yaml"
    existing.write_text(yaml.safe_dump(EXISTING, sort_keys=False))
    out = str(tmp_path / "cm.yaml")
    proc = export(host, "--node", "node-c", "--merge", str(existing), "--output", out)
    assert proc.returncode == 0, proc.stderr
    first = open(out).read()
    cm = yaml.safe_load(first)
    assert cm["data"] == {**EXISTING["data"], "node-c": node_json(host)}
    assert export(host, "--node", "node-c", "--merge", out, "--output", out).returncode == 0
    assert open(out).read() == first


@pytest.mark.parametrize("args,words", [
    (["--merge", "{cm}"], "--node NAME"),
    (["--node", "Node_1"], "is not a node name"),
    (["--json-only", "--node", "n1"], "--json-only prints config.json alone"),
    (["--node", "n1", "--merge", "{cm}", "--configmap", "other"], "has name 'device-plugin-config'"),
    (["--node", "n1", "--merge", "{cm}", "--namespace", "default"], "has namespace 'sriov'"),
    (["--node", "n1", "--merge", "{missing}"], "cannot read it"),
    (["--node", "n1", "--merge", "{notcm}"], "not a ConfigMap"),
    (["--node", "n1", "--merge", "{badyaml}"], "not valid YAML"),
    (["--node", "n1", "--merge", "{baddata}"], "data must map keys to strings"),
])
def test_bad_options_or_files_exit_2_and_write_nothing(host, tmp_path, args, words):
    files = {"cm": yaml.safe_dump(EXISTING, sort_keys=False), "notcm": "apiVersion: v1\nkind: Secret\n",
             "badyaml": "data: [\n", "baddata": yaml.safe_dump({**EXISTING, "data": {"n": 1}})}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "out.yaml"
    args = [a.format(**{n: str(tmp_path / n) for n in (*files, "missing")}) for a in args]
    proc = export(host, *args, "--output", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert words in proc.stderr
    assert not out.exists()
