"""`sriov-node boot` on the simulated kernel: each PF converges as soon as it is ready; the wait is bounded."""

from __future__ import annotations

import json
import threading
import time

from tests.helpers import open_host
from tests.helpers import run_cli, sim_writes

PF0, PF1 = "0000:20:00.0", "0000:20:00.1"
CONFIG = '[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf]]\nname = "ens1f1"\nnum_vfs = 3\n  [[pf.vfs]]\n  range = "0"\n  driver = "vfio-pci"\n'


def test_boot_converges_every_present_pf(make_host, write_config):
    host = make_host(vfio_loaded=True)
    result = run_cli("boot", "--json", root=host.root, config=write_config(CONFIG))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert sorted((p["pci"], p["status"]) for p in body["pfs"]) == [(PF0, "changed"), (PF1, "changed")]
    assert body["missing"] == []


def test_a_late_driver_does_not_delay_the_other_pf(make_host, write_config):
    host = make_host(vfio_loaded=True)
    host.sysfs.unbind(PF1, "i40e")  # its driver is still loading: no netdev, no name yet

    def late_driver():
        time.sleep(1.0)
        open_host(host.root).sysfs.drivers_probe(PF1)

    loader = threading.Thread(target=late_driver)
    loader.start()
    start = time.monotonic()
    result = run_cli("boot", "--wait", "20", root=host.root, config=write_config(CONFIG))
    loader.join()
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 15
    log = [(p, v) for p, v, _ in sim_writes(host)]
    first_pf0 = log.index((f"sys/bus/pci/devices/{PF0}/sriov_numvfs", "'2\\n'"))
    pf1_back = log.index(("sys/bus/pci/drivers_probe", f"'{PF1}\\n'"))
    assert first_pf0 < pf1_back  # PF0 converged while PF1's driver was still missing
    assert "waiting" in result.stderr and "ens1f1" in result.stderr
    h = open_host(host.root)
    assert h.sysfs.num_vfs(PF1) == 3 and h.sysfs.device_driver(h.sysfs.vf_address(PF1, 0)) == "vfio-pci"


def test_a_pf_that_never_appears_is_reported_and_the_wait_is_bounded(make_host, write_config):
    host = make_host(vfio_loaded=True)
    config = write_config(CONFIG + '[[pf]]\npci = "0000:99:00.0"\nnum_vfs = 1\n')
    start = time.monotonic()
    result = run_cli("boot", "--wait", "1.5", "--json", root=host.root, config=config)
    elapsed = time.monotonic() - start
    assert result.returncode == 1 and elapsed < 10
    body = json.loads(result.stdout)
    assert [m for m in body["missing"] if "0000:99:00.0" in m]
    assert sorted(p["status"] for p in body["pfs"]) == ["changed", "changed"]
    assert "gave up after" in result.stderr


def test_an_invalid_config_fails_at_once(make_host, write_config):
    host = make_host()
    start = time.monotonic()
    result = run_cli("boot", "--wait", "30", root=host.root, config=write_config('[[pf]]\nname = "ens1f0"\n'))
    assert result.returncode == 2 and "pf[0].num_vfs" in result.stderr
    assert time.monotonic() - start < 10 and sim_writes(host) == []
