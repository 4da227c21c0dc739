"""A VF `driver` that cannot drive the VFs is refused before any write, by `validate`, `apply --dry-run`
and `apply` alike (exit 1, nothing written, no generation): a device-specific driver (one with `pci:`
aliases in modules.alias) none of whose ID table entries matches the VFs' modalias (the one they have,
or for VFs not made yet the one they will have). The kernel would let driver_override match it and its
probe answer ENODEV, leaving the VF unbound with its override set. Drivers that bind any device through
driver_override (vfio-pci, pci-stub, uio_pci_generic, igb_uio, a module with no `pci:` alias or a
wildcard one) are never refused by this rule. Walked over every simulated NIC and every driver the
simulator knows."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import pytest

from sriov_node import drivers
from sriov_node.host.modules import Modules
from sriov_node.host.paths import Root
from sriov_node.sim.build import create_host
from sriov_node.sim.nics import NICS
from tests.helpers import open_host, run_cli, sim_digest

GENERIC = ("vfio-pci", "uio_pci_generic", "pci-stub")
# every device-specific driver the simulator knows: the PF and VF drivers of its NIC models
SPECIFIC = tuple(sorted({n.pf_driver for n in NICS.values()} | {n.vf_driver for n in NICS.values()}))
MODELS = tuple(NICS)


def _pf_of(k: int) -> str:
    """The first PF of the k-th NIC of a simulated host (`sim create` puts NIC k on bus 0x20 + 0x10*k)."""
    return f"0000:{0x20 + 0x10 * k:02x}:00.0"


# ------------------------------------------------------------------ the rule (pure)


def test_generic_drivers_are_never_refused_whatever_the_aliases():
    for name in ("vfio-pci", "vfio_pci", "pci-stub", "uio_pci_generic", "igb_uio", "pci-pf-stub"):
        assert drivers.binds_by_id_table(name, ("pci:v00008086d00001889sv*sd*bc*sc*i*",)) is False, name
        assert drivers.vf_driver_refusal(name, ("pci:v00008086d00001889sv*sd*bc*sc*i*",), ("iavf",), None) is None
    assert drivers.binds_by_id_table("some_driver", ()) is False  # no pci: alias: binds through override
    wildcard = ("pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v*d*sv*sd*bc*sc*i*")
    assert drivers.binds_by_id_table("any_pci", wildcard) is False
    assert drivers.binds_by_id_table("ice", ("pci:v00008086d0000159Bsv*sd*bc*sc*i*",)) is True
    assert drivers.binds_by_id_table("xhci_pci", ("pci:v*d*sv*sd*bc0Csc03i30*",)) is True  # a class entry
    assert drivers.binds_by_id_table("ice", None) is None  # modules.alias unreadable: not judged
    assert drivers.vf_driver_refusal("ice", None, ("iavf",), None) is None


def test_a_device_specific_driver_is_refused_naming_the_drivers_that_match():
    ice = ("pci:v00008086d0000159Bsv*sd*bc*sc*i*",)
    assert drivers.vf_driver_refusal("ice", ice, None, None) is None  # the VFs' own drivers unknown
    assert drivers.vf_driver_refusal("iavf", ("pci:v00008086d00001889sv*sd*bc*sc*i*",), ("iavf",), None) is None
    found = drivers.vf_driver_refusal("ice", ice, ("iavf",), "PCI 8086:1889", vf=3)
    assert found is not None and (found.key, found.errno, found.value, found.vf) == ("driver", "ENODEV", "ice", 3)
    assert "8086:1889" in found.why and "iavf" in found.why and 'driver = "iavf"' in found.fix
    none = drivers.vf_driver_refusal("ice", ice, (), None)
    assert none is not None and "vfio-pci" in none.fix


# ------------------------------------------------------------------ modules.alias on a real kernel's root


ALIASES = """\
# Aliases extracted from modules themselves.
alias pci:v00008086d0000159Bsv*sd*bc*sc*i* ice
alias pci:v00008086d00001889sv*sd*bc*sc*i* iavf
alias pci:v00008086d0000154Csv*sd*bc*sc*i* iavf
alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci
alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
alias pci:v*d*sv*sd*bc*sc*i* any_pci
alias char-major-10-196 vfio
"""


def _kernel_root(tmp_path, alias_text=ALIASES) -> Modules:
    release = "6.1.0-test"
    base = tmp_path / "lib/modules" / release
    base.mkdir(parents=True)
    if alias_text is not None:
        (base / "modules.alias").write_text(alias_text)
    (base / "modules.builtin.alias").write_text("alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci\n")
    return Modules(Root(str(tmp_path)), release=release)


def test_the_aliases_of_a_drivers_module_are_read_from_modules_alias(tmp_path):
    modules = _kernel_root(tmp_path)
    assert modules.pci_aliases("ice") == ("pci:v00008086d0000159Bsv*sd*bc*sc*i*",)
    assert set(modules.pci_aliases("iavf")) == {"pci:v00008086d00001889sv*sd*bc*sc*i*",
                                                  "pci:v00008086d0000154Csv*sd*bc*sc*i*"}
    assert modules.pci_aliases("vfio-pci") == ()  # only override-only vfio_pci: aliases
    assert modules.pci_aliases("mlx5_vfio_pci") == ()
    assert modules.pci_aliases("pci-stub") == () and modules.pci_aliases("nosuch") == ()
    assert modules.pci_aliases("virtio-pci") == ("pci:v00001AF4d00001000sv*sd*bc*sc*i*",)  # built in
    assert drivers.binds_by_id_table("any_pci", modules.pci_aliases("any_pci")) is False
    assert drivers.binds_by_id_table("xhci_pci", modules.pci_aliases("xhci_pci")) is True
    # a loaded driver's own module (its name differs from the module's)
    drv = tmp_path / "sys/bus/pci/drivers/odd-name"
    drv.mkdir(parents=True)
    (tmp_path / "sys/module/iavf").mkdir(parents=True)
    os.symlink("../../../../module/iavf", str(drv / "module"))
    assert set(modules.pci_aliases("odd-name")) == set(modules.pci_aliases("iavf"))


def test_without_modules_alias_nothing_is_judged(tmp_path):
    modules = _kernel_root(tmp_path, alias_text=None)
    assert modules.pci_aliases("ice") is None
    assert drivers.binds_by_id_table("ice", modules.pci_aliases("ice")) is None


# ------------------------------------------------------------------ every simulated NIC x every driver


@pytest.fixture(scope="module")
def every_nic(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("every") / "host")
    create_host(root, tuple((key, 1, None) for key in MODELS))
    return root


def _driver_refusals(root: str, config: str) -> Dict[str, List[Tuple[int, drivers.Refusal]]]:
    """PF -> the `driver` refusals (ENODEV) preflight finds for its plan, as apply, its dry run and
    validate judge it (survey, plan, capabilities)."""
    from sriov_node.config import load_config
    from sriov_node.engine.plan import plan_pf
    from sriov_node.engine.preflight import capabilities
    from sriov_node.engine.survey import survey

    host = open_host(root)
    out: Dict[str, List[Tuple[int, drivers.Refusal]]] = {}
    for judged in survey(host, load_config(config)).judged:
        plan = plan_pf(judged.target, frozenset(), findings=judged.findings)
        refused, _ = capabilities(host, plan)
        out[judged.target.pf.pci] = [(r.vf, r) for r in refused if r.key == "driver" and r.errno == "ENODEV"]
    return out


def _every_pf_config(tmp_path, driver: str) -> str:
    text = "version = 1\n" + "".join(
        f'[[pf]]\npci = "{_pf_of(k)}"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\ndriver = "{driver}"\n'
        for k in range(len(MODELS)))
    path = tmp_path / f"{driver}.toml"
    path.write_text(text)
    return str(path)


def _check_domain(root: str, tmp_path) -> None:
    for driver in SPECIFIC + GENERIC:
        found = _driver_refusals(root, _every_pf_config(tmp_path, driver))
        for k, model in enumerate(MODELS):
            nic = NICS[model]
            refused = found[_pf_of(k)]
            if driver in GENERIC or driver == nic.vf_driver:
                assert refused == [], (model, driver, refused)
                continue
            assert sorted(vf for vf, _ in refused) == [0, 1], (model, driver)
            for _, r in refused:
                assert r.value == driver and nic.vf_driver in r.why, (model, driver, r)
                assert f"{nic.vendor}:{nic.vf_device}" in r.why and nic.vf_driver in r.fix, (model, driver, r)


def test_every_nic_refuses_every_other_nics_driver_for_vfs_to_come(every_nic, tmp_path):
    """No VF exists yet: judged on the modalias the VFs will have (future_default_drivers)."""
    assert len(SPECIFIC) >= 8 and "ice" in SPECIFIC and "igbvf" in SPECIFIC
    _check_domain(every_nic, tmp_path)


def test_every_nic_refuses_every_other_nics_driver_for_vfs_there(tmp_path):
    """The VFs exist, on their default driver: judged on their own modalias (default_drivers_of)."""
    root = str(tmp_path / "host")
    create_host(root, tuple((key, 1, None) for key in MODELS))
    host = open_host(root)
    for k in range(len(MODELS)):
        host.sysfs.set_num_vfs(_pf_of(k), 2)
    _check_domain(root, tmp_path)


# ------------------------------------------------------------------ the CLI: validate, dry run, apply agree


@pytest.fixture
def node(tmp_path):
    """The reviewer's host: ens1f0/ens1f1 ice (E810), ens2f0 i40e, ens3f0 igb, ens4f0 mlx5_core."""
    root = str(tmp_path / "node")
    create_host(root, (("e810", 2, 64), ("x710", 1, None), ("i350", 1, None), ("cx5", 1, None)))
    return root


def _config(tmp_path, pf: str, driver: str, num_vfs: int = 4, vfs: str = "0-3") -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'version = 1\n[[pf]]\nname = "{pf}"\nnum_vfs = {num_vfs}\n'
                    f'[[pf.vfs]]\nrange = "{vfs}"\ndriver = "{driver}"\n')
    return str(path)


REFUSED = [("ens1f0", "ice", "iavf", "8086:1889"), ("ens1f0", "mlx5_core", "iavf", "8086:1889"),
           ("ens4f0", "iavf", "mlx5_core", "15b3:1018"), ("ens2f0", "igbvf", "iavf", "8086:154c")]


@pytest.mark.parametrize("pf,driver,fix,vf_id", REFUSED, ids=[f"{p}-{d}" for p, d, _, _ in REFUSED])
def test_a_driver_that_cannot_drive_the_vfs_is_refused_by_all_three(node, tmp_path, pf, driver, fix, vf_id):
    config = _config(tmp_path, pf, driver)
    before = sim_digest(node)
    for argv in (["validate"], ["apply", "--dry-run"], ["apply", "--dry-run", "--detailed-exitcode"], ["apply"]):
        done = run_cli(*argv, root=node, config=config)
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        line = next(line for line in done.stderr.splitlines() if f'driver = "{driver}"' in line)
        assert f"({pf})" in line and "VF(s) 0-3: pf[0].vfs[0].driver" in line, line
        assert f"{driver} cannot drive these VFs (PCI {vf_id})" in line and f"these VFs: {fix}" in line, line
        assert f'Fix: set driver = "{fix}"' in line and "ENODEV" in line and "nothing was written" in line, line
    assert sim_digest(node) == before  # not one write
    history = json.loads(run_cli("history", "--json", root=node, config=config).stdout)
    assert history["generations"] == []
    valid = json.loads(run_cli("validate", "--json", root=node, config=config).stdout)
    assert valid["valid"] is False and valid["refused"][0]["refusals"][0]["key"] == "driver"


@pytest.mark.parametrize("pf,driver", [("ens1f0", "iavf"), ("ens1f0", "vfio-pci"), ("ens4f0", "mlx5_core"),
                                       ("ens2f0", "iavf"), ("ens3f0", "igbvf"), ("ens4f0", "vfio-pci")])
def test_the_vfs_own_driver_and_vfio_pci_pass_and_apply(node, tmp_path, pf, driver):
    config = _config(tmp_path, pf, driver, num_vfs=2, vfs="0-1")
    assert run_cli("validate", root=node, config=config).returncode == 0
    assert run_cli("apply", "--dry-run", root=node, config=config).returncode == 0
    done = run_cli("apply", root=node, config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert run_cli("status", "--exit-code", root=node, config=config).returncode == 0


def test_vfs_there_on_their_driver_are_not_moved_to_one_that_cannot_drive_them(node, tmp_path):
    """VF 1 exists on iavf; driver = "ice" would unbind it (and leave it unbound): refused, iavf kept."""
    config = _config(tmp_path, "ens1f0", "iavf", num_vfs=2, vfs="0-1")
    assert run_cli("apply", root=node, config=config).returncode == 0
    config = _config(tmp_path, "ens1f0", "ice", num_vfs=2, vfs="1")
    before = sim_digest(node)
    for argv in (["validate"], ["apply", "--dry-run"], ["apply"]):
        done = run_cli(*argv, root=node, config=config)
        assert done.returncode == 1 and 'VF(s) 1: pf[0].vfs[0].driver = "ice"' in done.stderr, (argv, done.stderr)
    assert sim_digest(node) == before
    host = open_host(node)
    vf = host.sysfs.vf_address("0000:20:00.0", 1)
    assert host.sysfs.device_driver(vf) == "iavf"
