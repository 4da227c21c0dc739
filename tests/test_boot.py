"""`sriov-node boot` on the simulated kernel: each PF converges as soon as it is ready; the wait is bounded."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from sriov_node.sim.kernel import SimKernel
from tests.helpers import CLI, open_host, run_cli, sim_writes

from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)
CONFIG = '[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf]]\nname = "ens1f1"\nnum_vfs = 3\n  [[pf.vfs]]\n  range = "0"\n  driver = "vfio-pci"\n'


def test_boot_converges_every_present_pf(make_host, write_config):
    host = make_host(vfio_loaded=True)
    result = run_cli("boot", "--json", root=host.root, config=write_config(CONFIG))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert sorted((p["pci"], p["status"]) for p in body["pfs"]) == [(PF0, "changed"), (PF1, "changed")]
    assert body["missing"] == []
    again = run_cli("boot", root=host.root, config=write_config(CONFIG))  # the journal's words: the outcomes' own
    assert again.returncode == 0 and f"{PF0} (pf[0]): unchanged, 0 write(s)" in again.stderr, again.stderr


@pytest.mark.parametrize("lost", [False, True], ids=["heard", "uevents-lost"])
def test_a_late_driver_does_not_delay_the_other_pf(make_host, write_config, lost):
    host = make_host(vfio_loaded=True)
    host.sysfs.unbind(PF1, "i40e")  # its driver is still loading: no netdev, no name yet
    if lost:  # the kernel drops every uevent (ENOBUFS each time boot reads): boot looks again all the same
        SimKernel(host.root).uevent_buffer(1)

    # boot runs as a user would start it; its driver comes when boot says it waits for it (after PF0 ran)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    proc = subprocess.Popen([CLI, "--root", host.root, "--config", write_config(CONFIG), "boot", "--wait", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "waiting" in line:
                open_host(host.root).sysfs.drivers_probe(PF1)
                break
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + rest)
    assert result.returncode == 0, result.stderr
    assert "gave up" not in result.stderr  # the late PF came within the wait
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
    result = run_cli("boot", "--wait", "1.5", "--json", root=host.root, config=config)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert [m for m in body["missing"] if "0000:99:00.0" in m]
    assert sorted(p["status"] for p in body["pfs"]) == ["changed", "changed"]
    assert "gave up after" in result.stderr


def test_an_invalid_config_fails_at_once(make_host, write_config):
    host = make_host()
    result = run_cli("boot", "--wait", "30", root=host.root, config=write_config('[[pf]]\nname = "ens1f0"\n'))
    assert result.returncode == 2 and "pf[0].num_vfs" in result.stderr
    assert "waiting" not in result.stderr and sim_writes(host) == []  # no wait began: it failed at once


def _count_surveys(monkeypatch):
    """Every survey of the host, wherever it is called from (boot's own included, if it had one)."""
    from sriov_node.engine import reconcile as reconcile_module
    from sriov_node.engine import survey as survey_module
    from sriov_node.service import boot as boot_module

    calls: list = []
    real = survey_module.survey

    def counted(*args, **kwargs):
        calls.append(kwargs.get("vfs", True))
        return real(*args, **kwargs)

    for module in (survey_module, reconcile_module, boot_module):
        monkeypatch.setattr(module, "survey", counted, raising=False)
    return calls


def test_boot_surveys_once_when_every_pf_is_ready(make_host, write_config, monkeypatch):
    """Boot's bookkeeping comes from its run's own survey: every PF ready at once is one survey
    (no look of boot's own before the run, none after it when nothing is awaited)."""
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service import boot as boot_module

    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    surveys = _count_surveys(monkeypatch)
    report = boot_module.boot(host, load_desired(host, path), wait=5, timeout=10,
                              log=logging.getLogger("sriov-node-test"))
    assert sorted((pci, o.status) for pci, o in report.outcomes.items()) == [(PF0, "changed"), (PF1, "changed")]
    assert report.missing == [] and report.exit_code == 0
    assert surveys == [True], surveys


def test_the_readiness_wait_reads_the_pfs_and_their_drivers_not_their_vfs(make_host, write_config, monkeypatch):
    # While boot waits for a late PF, each look at the host is one run's survey, which asks which
    # PFs the blocks select and whether their drivers are bound, and picks those ready: a look that
    # picks none reads no VF, records nothing and writes nothing.
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service import boot as boot_module

    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=path).returncode == 0
    vfs = {host.sysfs.vf_address(PF0, i) for i in range(2)}
    host.sysfs.unbind(PF1, "i40e")  # PF1's driver is late: boot waits for it after running PF0
    state = os.path.join(host.root, "var/lib/sriov-node/state.json")
    runs: list = []  # per look: [PFs it ran, VF paths it read, state.json touched]
    plain_reconcile = boot_module.reconcile

    def reconcile(*args, **kwargs):
        runs.append([None, [], os.stat(state).st_mtime_ns])
        result = plain_reconcile(*args, **kwargs)
        runs[-1][0] = sorted(o.pci for o in result.outcomes)
        runs[-1][2] = runs[-1][2] != os.stat(state).st_mtime_ns
        return result

    monkeypatch.setattr(boot_module, "reconcile", reconcile)
    plain_path = host.sysfs.path

    def path_of(base, *parts):
        text = "/".join((base,) + parts)
        if runs and any(vf in text for vf in vfs) and not text.endswith("/sriov_totalvfs"):
            runs[-1][1].append(text)
        return plain_path(base, *parts)

    host.sysfs.path = path_of
    surveys = _count_surveys(monkeypatch)

    def cancelled():  # the wait ends after two looks that ran nothing: PF1 is still awaited
        return sum(1 for r in runs if r[0] == []) >= 2

    before = len(sim_writes(host))
    report = boot_module.boot(host, load_desired(host, path), wait=30, timeout=10,
                              log=logging.getLogger("sriov-node-test"), cancelled=cancelled)
    assert [r[0] for r in runs] == [[PF0], [], []] and report.outcomes[PF0].status == "unchanged"
    assert [m for m in report.missing if PF1 in m]  # still waited for when the wait ended
    assert [r[1] for r in runs[1:]] == [[], []] and runs[0][1]  # the run reads its PF's VFs, the looks none
    assert [r[2] for r in runs[1:]] == [False, False]  # a look records nothing
    assert len(sim_writes(host)) == before
    assert len(surveys) == len(runs)  # one survey a look


def test_boot_and_apply_answer_a_refused_run_with_the_same_exit_code(make_host, write_config):
    # One outcome vocabulary: a PF refused (a VF it would take is in use) exits 3 from apply and
    # from boot alike, and neither records a generation for a run that wrote nothing.
    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=path).returncode == 0
    held = host.sysfs.vf_address(PF1, 0)  # on vfio-pci: a VM holds it
    assert run_cli("sim", "hold", host.root, held).returncode == 0
    changed = write_config(CONFIG.replace('driver = "vfio-pci"', 'driver = "iavf"'))
    applied = run_cli("apply", "--json", root=host.root, config=changed)
    booted = run_cli("boot", "--json", root=host.root, config=changed)
    assert applied.returncode == booted.returncode == 3, (applied.stdout, booted.stdout, booted.stderr)
    assert json.loads(applied.stdout)["result"] == "refused"
    statuses = {p["pci"]: p["status"] for p in json.loads(booted.stdout)["pfs"]}
    assert statuses == {PF0: "unchanged", PF1: "refused"}
    assert json.loads(booted.stdout)["generation"] is None  # refused before writing: nothing recorded


INDEXED = ('[[pf]]\nvendor = "8086"\ndevice = "1572"\nindex = {a}\nnum_vfs = 2\n'
           '[[pf]]\nvendor = "8086"\ndevice = "1572"\nindex = {b}\nnum_vfs = 3\n')


def test_a_look_while_no_pf_has_its_driver_runs_nothing_even_when_index_rules_moved(make_host, write_config,
                                                                                    monkeypatch):
    # `index` rules that now select other PFs than the last recorded run make a per-PF run take those
    # PFs too; a look of boot's that picks no ready PF must not: it would run PFs whose driver is not
    # bound yet (ENOENT), count them as done and stop waiting for them.
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service import boot as boot_module

    host = make_host(vfio_loaded=True)
    assert run_cli("apply", root=host.root, config=write_config(INDEXED.format(a=0, b=1))).returncode == 0
    path = write_config(INDEXED.format(a=1, b=0))  # swapped: each PF's block is now the other one
    for pf in (PF0, PF1):
        host.sysfs.unbind(pf, "i40e")  # both drivers late
    looks: list = []
    plain = boot_module.reconcile

    def reconcile(*args, **kwargs):
        result = plain(*args, **kwargs)
        looks.append(sorted(o.pci or o.key for o in result.outcomes))
        return result

    monkeypatch.setattr(boot_module, "reconcile", reconcile)
    before = len(sim_writes(host))
    report = boot_module.boot(host, load_desired(host, path), wait=30, timeout=10,
                              log=logging.getLogger("sriov-node-test"), cancelled=lambda: len(looks) >= 2)
    assert looks == [[], []]  # nothing ran
    assert len(sim_writes(host)) == before and not report.outcomes
    assert all(any(pf in m for m in report.missing) for pf in (PF0, PF1)), report.missing  # still awaited
