"""`sriov-node export device-plugin`: selectors that match exactly the configured VFs, checked by a reference
matcher of the device plugin (tests/deviceplugin.py) against the simulated host's devices."""

from __future__ import annotations

import json

import pytest
import yaml

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.host.observe import observe
from sriov_node.engine.reconcile import reconcile
from sriov_node.sim.kernel import SimKernel
from sriov_node.sim.nics import NICS
from tests import deviceplugin
from tests.helpers import run_cli, sim_writes

X710_0, X710_1, E810_0 = "0000:20:00.0", "0000:20:00.1", "0000:30:00.0"

LAYOUT = """
[device_plugin]
resource_prefix = "example.org"

[[pf]]
name = "ens1f0"                 # X710: VFs 0-3 for DPDK, 4-5 as netdevs, 6-7 for nobody
num_vfs = 8
  [[pf.vfs]]
  range = "0-3"
  driver = "vfio-pci"
  resource = "dpdk"
  [[pf.vfs]]
  range = "4-5"
  driver = "iavf"
  resource = "netdev"
  [[pf.vfs]]
  range = "6-7"
  driver = "iavf"

[[pf]]
pci = "0000:20:00.1"            # the X710's second port: every VF in the netdev pool
num_vfs = 4
  [[pf.vfs]]
  range = "0-3"
  driver = "iavf"
  resource = "netdev"

[[pf]]
name = "ens2f0"                 # E810: another VF device ID in the same pools
num_vfs = 6
  [[pf.vfs]]
  range = "0,2"
  driver = "iavf"
  resource = "netdev"
  [[pf.vfs]]
  range = "1,3-4"
  driver = "vfio-pci"
  resource = "dpdk"
"""


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), ("e810", 1, None))


def apply(host, path):
    report = reconcile(open_host(host.root), load_config(path))
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    return report


def expected_pools(host, path):
    """prefix/resource -> the PCI addresses of the VFs the config gives that resource, read from the host."""
    desired = load_config(path)
    seen = observe(host)
    by_selector = {}
    for pf in seen.pfs:
        by_selector[("name", pf.name)] = pf
        by_selector[("pci", pf.pci)] = pf
    pools = {}
    for spec in desired.pfs:
        sel = spec.selector
        pf = by_selector[("name", sel.name)] if sel.name else by_selector[("pci", sel.pci)]
        for group in spec.vfs:
            if group.resource:
                pools.setdefault(f"{desired.resource_prefix}/{group.resource}", []).extend(
                    pf.vf(i).pci for i in group.indices)
    return {k: sorted(v) for k, v in pools.items()}


def export_json(host, path, *args):
    proc = run_cli("export", "device-plugin", "--json-only", *args, root=host.root, config=path)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_reference_matcher_follows_the_plugin():
    vf = deviceplugin.Device("0000:20:02.3", "8086", "154c", "iavf", "ens1f0", "0000:20:00.0", 3, 2, False, 0)
    assert deviceplugin.pf_entry_matches(["ens1f0#0-1,3"], "ens1f0", 3)
    assert not deviceplugin.pf_entry_matches(["ens1f0#0-1", "ens1f0#3"], "ens1f0", 3)  # only the first entry counts
    assert deviceplugin.pf_entry_matches(["ENS1F0"], "ens1f0", 3)  # names compare case-insensitively
    assert not deviceplugin.pf_entry_matches(["ens1f0#x,3"], "ens1f0", 3)  # the first bad item rejects
    assert not deviceplugin.selector_matches({"devices": ["154C"]}, vf)  # IDs compare exactly
    assert deviceplugin.selector_matches({"Devices": ["154c"], "pfnames": ["ens1f0#3"]}, vf)  # keys: any case
    pf = deviceplugin.Device("0000:20:00.0", "8086", "1572", "i40e", "", "", -1, 2, True, 0)
    assert deviceplugin.is_candidate(pf) and not deviceplugin.selector_matches({"pfNames": ["ens1f0"]}, pf)


def test_selectors_select_exactly_the_configured_vfs(host, write_config):
    path = write_config(LAYOUT)
    apply(host, path)
    text = export_json(host, path)
    doc = json.loads(text)

    pools = deviceplugin.match(text, deviceplugin.devices(host.root))

    assert pools == expected_pools(host, path)
    assert len(pools["example.org/dpdk"]) == 7 and len(pools["example.org/netdev"]) == 8
    pfs = {pf.pci for pf in observe(host).pfs} | {"0000:02:00.0"}  # and the management NIC
    assert not pfs & {pci for pool in pools.values() for pci in pool}
    # VFs 6-7 of ens1f0 are iavf VFs of the same device and PF as the netdev pool, and stay out
    spare = {observe(host).pf(X710_0).vf(i).pci for i in (6, 7)}
    assert not spare & set(pools["example.org/netdev"])
    netdev = next(r for r in doc["resourceList"] if r["resourceName"] == "netdev")
    assert netdev == {"resourceName": "netdev", "resourcePrefix": "example.org", "selectors": {
        "vendors": ["8086"], "devices": ["154c", "1889"], "drivers": ["iavf"],
        "pfNames": ["ens1f0#4-5", "ens1f1#0-3", "ens2f0#0,2"]}}
    assert [r["resourceName"] for r in doc["resourceList"]] == ["dpdk", "netdev"]


def test_the_configmap_carries_the_same_config_and_applies_as_yaml(host, write_config):
    path = write_config(LAYOUT)
    apply(host, path)
    proc = run_cli("export", "device-plugin", root=host.root, config=path)
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load(proc.stdout)
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap"
    assert cm["metadata"] == {"name": "sriovdp-config", "namespace": "kube-system"}
    assert json.loads(cm["data"]["config.json"]) == json.loads(export_json(host, path))

    out = host.root + "-cm.yaml"
    proc = run_cli("export", "device-plugin", "--configmap", "sriov-dp", "--namespace", "sriov", "--output", out,
                   root=host.root, config=path)
    assert proc.returncode == 0 and proc.stdout == "" and out in proc.stderr
    with open(out) as fh:
        assert yaml.safe_load(fh)["metadata"] == {"name": "sriov-dp", "namespace": "sriov"}


def test_a_pf_without_a_netdev_is_selected_by_its_pci_address(host, write_config):
    path = write_config(LAYOUT.replace('name = "ens1f0"', f'pci = "{X710_0}"'))
    apply(host, path)
    SimKernel(host.root).move_netdev_out(X710_0)  # its netdev went to another namespace: no name to select by

    text = export_json(host, path)

    netdev = next(r for r in json.loads(text)["resourceList"] if r["resourceName"] == "netdev")
    assert "pfNames" not in netdev["selectors"]
    assert netdev["selectors"]["rootDevices"] == [f"{X710_0}#4-5", f"{X710_1}#0-3", f"{E810_0}#0,2"]
    assert deviceplugin.match(text, deviceplugin.devices(host.root)) == expected_pools(host, path)


def test_export_names_what_is_not_converged_yet(host, write_config):
    path = write_config(LAYOUT)
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)
    assert proc.returncode == 0, proc.stderr
    assert "note: 0000:20:00.0 (ens1f0) differs from the config" in proc.stderr and "sriov-node apply" in proc.stderr
    # the selectors already name the VFs the config means (the device IDs from sriov_vf_device)
    assert json.loads(proc.stdout)["resourceList"][1]["selectors"]["devices"] == ["154c", "1889"]
    assert sim_writes(host) == []


def test_a_block_with_a_resource_that_is_not_on_this_host_fails_the_export(host, write_config):
    path = write_config(LAYOUT.replace('name = "ens2f0"', 'name = "ens9f0"'))
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)
    assert proc.returncode == 1
    err = json.loads(proc.stdout)["error"]
    assert "pf[2].name: no network interface named 'ens9f0'" in err["message"]
    assert "its VFs would be missing from the selectors" in err["message"]


@pytest.mark.parametrize("args,words", [
    (["--json-only", "--configmap", "x"], "--json-only prints config.json alone"),
    (["--namespace", "Kube_System"], "is not a namespace name"),
])
def test_bad_options_exit_2(host, write_config, args, words):
    proc = run_cli("export", "device-plugin", *args, root=host.root, config=write_config(LAYOUT))
    assert proc.returncode == 2 and words in proc.stderr


def test_a_config_without_resources_exits_2(host, write_config):
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n')
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)
    assert proc.returncode == 2
    assert "no [[pf.vfs]] group names a resource" in json.loads(proc.stdout)["error"]["message"]


# ---------------------------------------------------------------------------- what the plugin can discover


def test_the_reference_matcher_follows_the_plugins_device_types():
    vf = deviceplugin.Device("0000:40:00.1", "19e5", "a251", "vfio-pci", "", "0000:40:00.0", 0, 0x12, False, 0)
    pf = deviceplugin.Device("0000:40:00.0", "19e5", "a250", "hisi_zip", "", "", -1, 0x12, True, 4)
    nvme = deviceplugin.Device("0000:30:00.1", "1b36", "0010", "vfio-pci", "", "0000:30:00.0", 0, 0x01, False, 0)
    assert deviceplugin.is_candidate(vf, "accelerator") and not deviceplugin.is_candidate(vf, "netDevice")
    assert deviceplugin.is_candidate(pf, "accelerator")  # pkg/accelerator keeps PFs with VFs enabled
    assert not any(deviceplugin.is_candidate(nvme, t) for t in deviceplugin.DEVICE_CLASSES)
    # AccelDeviceSelectors has no pfNames/rootDevices: Go's decoder drops them, so they select nothing
    assert deviceplugin.selector_matches({"vendors": ["19e5"], "rootDevices": ["0000:99:00.0#7"]}, pf, "accelerator")
    assert not deviceplugin.selector_matches({"pciAddresses": ["0000:40:00.1"]}, pf, "accelerator")


def _resource_config(pci, driver="vfio-pci"):
    return f"""
[[pf]]
pci = "{pci}"
num_vfs = 4
  [[pf.vfs]]
  range = "1-2"
  driver = "{driver}"
  resource = "vfs"
"""


@pytest.mark.parametrize("model", sorted(NICS))
def test_every_model_is_exported_as_the_plugin_discovers_it_or_refused(make_host, write_config, model):
    """The rule over every simulated model: class 0x02 -> netDevice, 0x12 -> accelerator, else exit 1."""
    host = make_host((model, 1, None))
    pf = observe(host).pfs[-1].pci  # the model's PF (the management NIC comes first)
    path = write_config(_resource_config(pf))
    apply(host, path)
    base = int(NICS[model].pci_class, 16) >> 16

    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)

    if base not in (0x02, 0x12):
        assert proc.returncode == 1, proc.stdout
        message = json.loads(proc.stdout)["error"]["message"]
        assert f"the VFs of {pf}" in message and f"PCI class 0x{NICS[model].pci_class}" in message
        assert "discovers only network controllers (class 0x02" in message and "drop resource = 'vfs'" in message
        return
    assert proc.returncode == 0, proc.stderr
    (resource,) = json.loads(proc.stdout)["resourceList"]
    assert resource.get("deviceType", "netDevice") == ("accelerator" if base == 0x12 else "netDevice")
    pools = deviceplugin.match(proc.stdout, deviceplugin.devices(host.root))
    assert pools == expected_pools(host, path) and len(pools["intel.com/vfs"]) == 2


def test_an_accelerator_resource_names_its_vfs_by_address(make_host, write_config):
    host = make_host(("x710", 1, None), ("hisi-zip", 1, None))
    zip_pf = "0000:30:00.0"
    path = write_config(f"""
[[pf]]
name = "ens1f0"
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  driver = "iavf"
  resource = "netdev"

[[pf]]
pci = "{zip_pf}"
num_vfs = 4
  [[pf.vfs]]
  range = "0,2"
  driver = "vfio-pci"
  resource = "zip"
  [[pf.vfs]]
  range = "1,3"
  driver = "vfio-pci"
""")
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)
    assert proc.returncode == 1  # before apply: no VF addresses to name
    assert ("resource 'zip' is an accelerator resource, which the device plugin selects by VF PCI address, and "
            f"VF(s) 0,2 of {zip_pf} do not exist yet; run sriov-node apply first") in json.loads(proc.stdout)["error"]["message"]
    apply(host, path)

    text = export_json(host, path)

    zip_vfs = [observe(host).pf(zip_pf).vf(i).pci for i in (0, 2)]
    doc = json.loads(text)
    assert doc["resourceList"][1] == {"resourceName": "zip", "resourcePrefix": "intel.com", "deviceType": "accelerator",
                                      "selectors": {"vendors": ["19e5"], "devices": ["a251"], "drivers": ["vfio-pci"],
                                                    "pciAddresses": zip_vfs}}
    assert "deviceType" not in doc["resourceList"][0] and "pfNames" in doc["resourceList"][0]["selectors"]
    pools = deviceplugin.match(text, deviceplugin.devices(host.root))
    assert pools == expected_pools(host, path) and pools["intel.com/zip"] == sorted(zip_vfs)


def test_one_resource_cannot_hold_network_and_accelerator_vfs(make_host, write_config):
    host = make_host(("x710", 1, None), ("hisi-zip", 1, None))
    path = write_config(_resource_config("0000:20:00.0") + _resource_config("0000:30:00.0").replace("1-2", "0-1"))
    apply(host, path)
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)
    assert proc.returncode == 1
    assert ("resource 'vfs' has both network VFs (of 0000:20:00.0 (ens1f0)) and accelerator VFs (of 0000:30:00.0)"
            in json.loads(proc.stdout)["error"]["message"])
