"""`driver` omitted means the kernel's default driver: anything else bound is a difference.

The kernel's default for a VF is what its ID tables (modules.alias) give it. A VF a tool moved to
another driver and then cleared driver_override for (as DPDK's tools do) is no longer on its
default driver: `status` says so, `apply` unbinds it and probes the default. When the default
cannot be known here, `status` and `apply` say the VF could not be judged, never "ok".
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.helpers import open_host
from sriov_node.sim.kernel import SimKernel
from sriov_node.sim.nics import NICS
from tests.helpers import PF0, run_cli

PLAIN = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n'


def _other_vf_driver(model: str) -> str:
    """A VF driver of another NIC model (so the host has it loaded, and it is not this VF's default)."""
    mine = NICS[model].vf_driver
    return next(NICS[m].vf_driver for m in sorted(NICS) if NICS[m].vf_driver != mine)


def _other_model(model: str) -> str:
    return next(m for m in sorted(NICS) if NICS[m].vf_driver == _other_vf_driver(model))


def _by_override(driver):
    """DPDK's way: driver_override names the driver, unbind, probe, then the override is cleared."""
    def move(host, vf):
        kernel = SimKernel(host.root)
        if not host.sysfs.has_pci_driver(driver):
            kernel.load_module(driver)
        host.sysfs.set_driver_override(vf, driver)
        host.sysfs.unbind(vf, host.sysfs.device_driver(vf))
        host.sysfs.drivers_probe(vf)
        host.sysfs.set_driver_override(vf, None)
        return driver
    return move


def _by_new_id(host, vf, model):
    """Another NIC's VF driver takes the VF through a dynamic ID (new_id), which is then removed."""
    driver = _other_vf_driver(model)
    ident = host.sysfs.uevent("sys/bus/pci/devices", vf)["PCI_ID"].lower().replace(":", " ")
    host.sysfs.unbind(vf, host.sysfs.device_driver(vf))
    host.sysfs.write("sys/bus/pci/drivers", (driver, "new_id"), ident + "\n")
    host.sysfs.write("sys/bus/pci/drivers", (driver, "remove_id"), ident + "\n")  # bound devices stay bound
    return driver


def _by_new_id_kept(host, vf, model):
    """As above, but the dynamic ID stays: a plain probe would hand the VF straight back to it."""
    driver = _other_vf_driver(model)
    ident = host.sysfs.uevent("sys/bus/pci/devices", vf)["PCI_ID"].lower().replace(":", " ")
    host.sysfs.unbind(vf, host.sysfs.device_driver(vf))
    host.sysfs.write("sys/bus/pci/drivers", (driver, "new_id"), ident + "\n")
    return driver


SHAPES = {
    "another NIC's VF driver, its dynamic ID kept": _by_new_id_kept,
    "vfio-pci without override": lambda host, vf, model: _by_override("vfio-pci")(host, vf),
    "uio_pci_generic": lambda host, vf, model: _by_override("uio_pci_generic")(host, vf),
    "another NIC's VF driver": _by_new_id,
}


def _host(make_host, model):
    return make_host((model, 1, None), (_other_model(model), 1, None))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("model", sorted(NICS))
def test_a_vf_moved_to_a_foreign_driver_is_a_difference_and_is_repaired(make_host, write_config, model, shape):
    host = _host(make_host, model)
    default = NICS[model].vf_driver
    path = write_config(PLAIN)
    assert run_cli("apply", root=host.root, config=path).returncode == 0
    vf1 = host.sysfs.vf_address(PF0, 1)
    foreign = SHAPES[shape](host, vf1, model)
    assert host.sysfs.device_driver(vf1) == foreign and host.sysfs.driver_override(vf1) is None

    body = json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)
    pf = body["pfs"][0]
    assert pf["converged"] is False and body["converged"] is False
    assert pf["vfs"][1]["matches"] is False and pf["vfs"][0]["matches"] is True
    assert f"bound to {foreign}" in pf["vfs"][1]["findings"][0] and f"({default})" in pf["vfs"][1]["findings"][0]
    text = run_cli("status", root=host.root, config=path).stdout
    assert "ok (" not in [line for line in text.splitlines() if line.strip().startswith("vf1")][0]

    dry = json.loads(run_cli("apply", "--dry-run", "--json", root=host.root, config=path).stdout)
    assert dry["result"] == "planned"
    assert {"pf": PF0, "op": "unbind_driver", "vf": 1, "driver": foreign, "phase": "bindings"} in dry["actions"]
    shown = [{k: v for k, v in a.items() if k != "retry"} for a in dry["actions"]]  # less its retry rules
    assert {"pf": PF0, "op": "probe_default_driver", "vf": 1, "phase": "restore"} in shown

    applied = run_cli("apply", "--json", root=host.root, config=path)
    assert applied.returncode == 0, applied.stdout
    assert host.sysfs.device_driver(vf1) == default
    again = json.loads(run_cli("apply", "--json", root=host.root, config=path).stdout)
    assert again["writes"] == 0 and again["result"] == "converged"
    assert SimKernel(host.root).consistency_problems() == []


def test_a_foreign_driver_is_fine_when_the_config_names_it_or_says_any(make_host, write_config):
    host = _host(make_host, "x710")
    run_cli("apply", root=host.root, config=write_config(PLAIN))
    _by_override("uio_pci_generic")(host, host.sysfs.vf_address(PF0, 1))
    anything = write_config(PLAIN + '[[pf.vfs]]\nrange = "1"\ndriver = "any"\n')
    assert json.loads(run_cli("apply", "--json", root=host.root, config=anything).stdout)["writes"] == 0


def test_when_the_default_cannot_be_known_the_vf_is_not_judged_and_says_so(make_host, write_config):
    host = _host(make_host, "x710")
    path = write_config(PLAIN)
    run_cli("apply", root=host.root, config=path)
    vf1 = host.sysfs.vf_address(PF0, 1)
    _by_override("uio_pci_generic")(host, vf1)
    SimKernel(host.root).forget_module_aliases()

    body = json.loads(run_cli("status", "--json", root=host.root, config=path).stdout)
    pf = body["pfs"][0]
    vf = pf["vfs"][1]
    assert vf["matches"] is None and "not judged" in vf["note"] and "uio_pci_generic" in vf["note"]
    assert [line.split(":")[0] for line in pf["unjudged"]] == ["VF 0", "VF 1"]
    assert pf["vfs"][0]["matches"] is None and "iavf" in pf["vfs"][0]["note"]  # iavf cannot be judged either
    text = run_cli("status", root=host.root, config=path).stdout
    vf1_line = [line for line in text.splitlines() if line.strip().startswith("vf1")][0]
    assert "ok (" not in vf1_line and "not judged" in vf1_line
    assert "not judged" in [line for line in text.splitlines() if line.startswith(PF0)][0]

    applied = run_cli("apply", "--json", root=host.root, config=path)
    out = json.loads(applied.stdout)
    assert applied.returncode == 0 and out["writes"] == 0  # nothing known to fix ...
    assert any("not judged: VF 1: bound to uio_pci_generic" in n for n in out["notices"])  # ... and it says so
    assert [f["vf"] for f in out["pfs"][0]["unjudged"]] == [0, 1]
    text = run_cli("apply", root=host.root, config=path)
    assert "not judged" in text.stderr
    assert host.sysfs.device_driver(vf1) == "uio_pci_generic"


def test_a_captured_tree_without_module_aliases_is_not_judged(make_host, write_config, tmp_path):
    host = _host(make_host, "x710")
    path = write_config(PLAIN)
    run_cli("apply", root=host.root, config=path)
    _by_override("uio_pci_generic")(host, host.sysfs.vf_address(PF0, 1))
    capture = tmp_path / "capture"
    shutil.copytree(host.root, capture, symlinks=True)
    os.unlink(capture / ".sriov-node-sim.json")
    assert open_host(str(capture)).kind == "capture"
    body = json.loads(run_cli("status", "--json", root=str(capture), config=path).stdout)
    assert body["pfs"][0]["vfs"][1]["matches"] is None and "not judged" in body["pfs"][0]["vfs"][1]["note"]
    dry = json.loads(run_cli("apply", "--dry-run", "--json", root=str(capture), config=path).stdout)
    assert dry["actions"] == [] and dry["pfs"][0]["unjudged"]


def _alias_tree(root, aliases: str):
    """A root whose running kernel (6.1.0) has this modules.alias; its modules directory."""
    base = root / "lib/modules/6.1.0"
    base.mkdir(parents=True)
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/osrelease").write_text("6.1.0\n")
    (base / "modules.alias").write_text(aliases)
    return base


def test_module_aliases_name_the_default_and_an_alias_file_without_a_match_means_none(tmp_path):
    from sriov_node.host.modules import Modules
    from sriov_node.host.paths import Root

    base = _alias_tree(tmp_path, "alias pci:v00008086d0000154Csv*sd*bc*sc*i* iavf\nalias vfio_pci:v*d*sv*sd*bc*sc*i* "
                                 "vfio_pci\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n")
    iavf_vf = "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00"
    other = "pci:v00008086d00001889sv00008086sd00000000bc02sc00i00"
    assert Modules(Root(str(tmp_path))).default_drivers(iavf_vf, "8086", "154c") == ("iavf",)
    assert Modules(Root(str(tmp_path))).default_drivers("pci:v0000144Dd0000A808sv0000144Dsd0000A801bc01sc08i02",
                                                        "144d", "a808") == ("nvme",)
    assert Modules(Root(str(tmp_path))).default_drivers(other, "8086", "1889") is None  # built-ins unknown
    (base / "modules.builtin.alias").write_text("alias pci:v*d*sv*sd*bc06sc04i00* pcieport\n")
    assert Modules(Root(str(tmp_path))).default_drivers(other, "8086", "1889") == ()
    (base / "modules.alias").unlink()
    assert Modules(Root(str(tmp_path))).default_drivers(iavf_vf, "8086", "154c") is None


def test_each_modalias_is_matched_once_per_host(tmp_path, monkeypatch):
    """The daemon asks the same modaliases in every run (a PF with no VFs yet, each read-back): one
    host matches each against modules.alias once, and answers the same every time after."""
    from sriov_node.host import modules
    from sriov_node.host.paths import Root

    _alias_tree(tmp_path, "alias pci:v00008086d0000154Csv*sd*bc*sc*i* iavf\nalias pci:v00008086d000010CAsv*sd*bc*sc*i* "
                          "igbvf\nalias pci:v*d*sv*sd*bc01sc08i02* nvme\n")
    iavf_vf = "pci:v00008086d0000154Csv00008086sd00000000bc02sc00i00"
    igb_vf = "pci:v00008086d000010CAsv00008086sd00000000bc02sc00i00"
    matched = []
    real = modules._matches
    monkeypatch.setattr(modules, "_matches", lambda alias, pattern: matched.append(alias) or real(alias, pattern))
    host_modules = modules.Modules(Root(str(tmp_path)))
    answers = [host_modules.default_drivers(alias, "8086", None) for alias in (iavf_vf, igb_vf, iavf_vf, igb_vf)]
    assert answers == [("iavf",), ("igbvf",), ("iavf",), ("igbvf",)]
    assert matched.count(iavf_vf) == matched.count(igb_vf) == 3  # each vendor's patterns, once per modalias
