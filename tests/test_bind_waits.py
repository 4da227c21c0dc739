"""A kernel answer is never taken for success and then waited on: a refused bind fails that VF at once.

EBUSY from a VF's bind means it is bound already (to what, the driver link says) or that the
driver's probe found the device busy. Neither gets better by waiting out --timeout per VF.
"""

from __future__ import annotations

import errno
import json

import pytest

from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, run_cli, sim_writes

VFIO_4 = f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\ndriver = "vfio-pci"\n'


def test_ebusy_from_every_bind_fails_each_vf_at_once_not_after_the_timeout(make_host, write_config):
    host = make_host()
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", errno="EBUSY")
    # --timeout 600: waiting on any of the four VFs would outlast run_cli's own 120 s limit
    result = run_cli("apply", "--json", "--timeout", "600", root=host.root, config=write_config(VFIO_4))
    body = json.loads(result.stdout)
    assert result.returncode == 1 and body["exit_code"] == 1
    (pf,) = body["pfs"]
    assert sorted(e["vf"] for e in pf["errors"]) == [0, 1, 2, 3]
    assert {e["errno"] for e in pf["errors"]} == {"EBUSY"}  # the kernel's answer, not ETIMEDOUT
    assert "probe answered EBUSY" in pf["error"] and "ETIMEDOUT" not in pf["error"]
    binds = [p for p, _, res in sim_writes(host) if p.endswith("vfio-pci/bind")]
    assert len(binds) == 4  # one bind per VF, each answered once


def test_ebusy_while_bound_to_the_wanted_driver_is_success(make_host, write_config, monkeypatch):
    """EBUSY because the VF is bound already: read the driver link once; the wanted driver is fine."""
    from sriov_node.config import load_config
    from tests.helpers import open_host
    from sriov_node.host.sysfs import Sysfs
    from sriov_node.engine.reconcile import reconcile

    host = open_host(make_host().root)
    kernel = SimKernel(host.root)
    kernel.add_fault("probe_fails", driver="vfio-pci", errno="EAGAIN")  # our drivers_probe leaves it unbound

    def bound_meanwhile(self, pci, driver):  # the probe that failed for us succeeds for another tool
        kernel.clear_faults()
        self.drivers_probe(pci)
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(Sysfs, "bind", bound_meanwhile)
    report = reconcile(host, load_config(write_config(VFIO_4)), timeout=600)
    assert report.exit_code == 0, [o.error for o in report.outcomes]


@pytest.mark.parametrize("bound_to", ["iavf"])
def test_ebusy_while_bound_to_another_driver_names_it(make_host, write_config, monkeypatch, bound_to):
    from sriov_node.config import load_config
    from tests.helpers import open_host
    from sriov_node.host.sysfs import Sysfs
    from sriov_node.engine.reconcile import reconcile

    host = open_host(make_host().root)
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", errno="EAGAIN")
    kernel = SimKernel(host.root)

    def another_tool_binds(self, pci, driver):  # iavf took the VF between our probe and our bind
        kernel.clear_faults()
        self.set_driver_override(pci, bound_to)
        self.drivers_probe(pci)
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(Sysfs, "bind", another_tool_binds)
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "vfio-pci"\n')
    report = reconcile(host, load_config(path), timeout=600)
    (outcome,) = report.outcomes
    assert report.exit_code == 1 and outcome.errors[0]["errno"] == "EBUSY"
    assert f"it is bound to {bound_to}" in outcome.error
