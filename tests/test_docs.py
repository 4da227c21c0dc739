"""The docs cannot drift: the reference against the schema, the examples against a simulated host and the device
plugin's matcher, the troubleshooting page against the messages the code prints, the guide's snippets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from sriov_node import config as schema
from sriov_node.config import load_config, parse_config
from tests.helpers import open_host
from sriov_node.model import ESWITCH_MODES, LINK_STATES, VLAN_PROTOS
from sriov_node.engine.reconcile import survey
from tests import deviceplugin
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.toml"))
# The simulated NICs each example is written for (their first NIC gets ens1f*, PCI bus 0x20)
HOSTS = {"intel-x710": ("x710", 2), "intel-e810": ("e810", 2), "mellanox-connectx-switchdev": ("cx5", 2)}


def schema_keys():
    return (set(schema.TOP_KEYS)
            | {f"pf.{k}" for k in schema.PF_KEYS}
            | {f"pf.vfs.{k}" for k in schema.VF_KEYS}
            | {f"device_plugin.{k}" for k in schema.DEVICE_PLUGIN_KEYS}
            | {f"metrics.{k}" for k in schema.METRICS_KEYS}
            | {f"history.{k}" for k in schema.HISTORY_KEYS})


def reference_rows():
    rows = {}
    for line in (DOCS / "config-reference.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_.]+)` \|(.*)$", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is documented twice"
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_reference_documents_every_key_and_only_keys_that_exist():
    documented = set(reference_rows())
    assert documented - schema_keys() == set(), "documented, but the schema has no such key"
    assert schema_keys() - documented == set(), "in the schema, but not documented"


@pytest.mark.parametrize("key,choices", [("pf.eswitch_mode", ESWITCH_MODES), ("pf.vfs.link_state", LINK_STATES),
                                         ("pf.vfs.vlan_proto", tuple(VLAN_PROTOS))])
def test_the_reference_lists_every_choice(key, choices):
    row = reference_rows()[key]
    assert all(f'"{c}"' in row for c in choices), row


def test_there_is_an_example_for_each_nic_family():
    assert [p.stem for p in EXAMPLES] == sorted(HOSTS)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_applies_on_its_nic_and_exports_exact_selectors(example, make_host):
    model, ports = HOSTS[example.stem]
    host = make_host((model, ports, None))
    desired = load_config(str(example))
    assert desired.resources(), "each example exports device plugin resources"

    first = run_cli("apply", "--json", root=host.root, config=str(example))
    assert first.returncode == 0, first.stdout + first.stderr
    again = json.loads(run_cli("apply", "--json", root=host.root, config=str(example)).stdout)
    assert again["writes"] == 0

    exported = run_cli("export", "device-plugin", "--json-only", root=host.root, config=str(example))
    assert exported.returncode == 0, exported.stderr
    resolution = survey(open_host(host.root), desired).resolution
    expected = {}
    for target in resolution.targets:
        for group in target.spec.vfs:
            if group.resource:
                expected.setdefault(f"{desired.resource_prefix}/{group.resource}", []).extend(
                    target.pf.vf(i).pci for i in group.indices)
    pools = deviceplugin.match(exported.stdout, deviceplugin.devices(host.root))
    assert pools == {k: sorted(v) for k, v in expected.items()}


def _source_text():
    return "\n".join(p.read_text() for p in sorted((REPO / "sriov_node").rglob("*.py")))


def test_every_troubleshooting_entry_quotes_a_message_the_code_prints():
    quoted = re.findall(r"^### `([^`]+)`$", (DOCS / "troubleshooting.md").read_text(), re.M)
    assert len(quoted) >= 30
    source = _source_text()
    missing = [q for q in quoted if q not in source]
    assert not missing, f"quoted in docs/troubleshooting.md, printed nowhere: {missing}"


def _blocks(language):
    return re.findall(rf"^```{language}\n(.*?)^```$", (DOCS / "guide.md").read_text(), re.M | re.S)


def test_the_guide_config_is_valid_and_its_resources_are_what_the_pod_and_nad_request():
    (toml,) = _blocks("toml")
    desired = parse_config(toml.encode(), "guide.md")
    names = {f"{desired.resource_prefix}/{r}" for r in desired.resources()}
    nad, pod = (yaml.safe_load(b) for b in _blocks("yaml"))
    assert nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] in names
    assert json.loads(nad["spec"]["config"])["type"] == "sriov"
    assert pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == nad["metadata"]["name"]
    requests = pod["spec"]["containers"][0]["resources"]["requests"]
    assert set(requests) <= names


def test_the_guide_selectors_are_what_export_prints_for_its_config(make_host, tmp_path):
    (toml,) = _blocks("toml")
    path = tmp_path / "config.toml"
    path.write_text(toml)
    host = make_host(("x710", 2, None))
    assert run_cli("apply", root=host.root, config=str(path)).returncode == 0
    exported = json.loads(run_cli("export", "device-plugin", "--json-only", root=host.root, config=str(path)).stdout)
    (shown,) = _blocks("json")
    assert json.loads(shown) in exported["resourceList"]


def test_the_guide_commands_exist():
    text = (DOCS / "guide.md").read_text()
    for argv in (["export", "device-plugin"], ["set"], ["unset"], ["capture"], ["metrics"], ["validate"],
                 ["apply"], ["status"], ["history"], ["commit"], ["rollback"], ["apply", "--checkpoint"],
                 ["apply", "--dry-run", "--detailed-exitcode"], ["status", "--exit-code"]):
        assert "sriov-node " + " ".join(argv) in text
        words = [a for a in argv if not a.startswith("-")]
        shown = run_cli(*words, "--help")
        assert shown.returncode == 0, argv
        assert all(a in shown.stdout for a in argv if a.startswith("-")), argv


def _readme_day2_commands():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Day 2:"):]
    (block,) = re.findall(r"^```sh\n(.*?)^```$", section[:section.index("\n## ", 1)], re.M | re.S)
    for line in block.splitlines():
        command, _, comment = line.partition("#")
        m = re.match(r"\s*exit (\d+)", comment)
        yield command.split()[1:], int(m.group(1)) if m else 0


def test_the_readme_day2_session_runs_as_written(make_host, tmp_path):
    host = make_host(("x710", 2, None), ("e810", 1, None))
    config = Path(host.root) / "etc/sriov-node/config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_bytes((REPO / "etc/sriov-node/config.toml").read_bytes())
    ran = []
    for argv, code in _readme_day2_commands():
        proc = run_cli(*argv, root=host.root)
        assert proc.returncode == code, (argv, proc.stdout, proc.stderr)
        ran.append(argv[0])
    assert {"apply", "set", "history", "rollback", "status", "commit"} <= set(ran)
    body = json.loads(run_cli("history", "--json", root=host.root).stdout)
    assert body["current"] == body["generations"][-1]["number"] >= 4
