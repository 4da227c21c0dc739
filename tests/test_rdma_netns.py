"""rdma_netns through the CLI on a simulated host (ib_core and iproute2's rdma modelled in sim/rdma.py from
drivers/infiniband/core/device.c and rdma-system(8)): read first, set only when it differs; at run time
when no other network namespace exists, else the modprobe.d option and a reboot required that `status`
and `check` show; across a simulated reboot the mode is read back; a mode a reboot did not give is a
failure named once and never retried (no second reboot asked for)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import PF0, run_cli

CONFIG = f"""
    rdma_netns = "{{mode}}"
    [[pf]]
    pci = "{PF0}"
    num_vfs = 2
"""
OPTION = "etc/modprobe.d/sriov-node-rdma.conf"
RECORD = "var/lib/sriov-node/rdma-netns.json"


def mode(root: str) -> str:
    return {"Y": "shared", "N": "exclusive"}[Path(root, "sys/module/ib_core/parameters/netns_mode").read_text().strip()]


def check(root: str, config: str, *extra: str):
    proc = run_cli("check", "--json", *extra, root=root, config=config)
    body = json.loads(proc.stdout)
    (rdma,) = [c for c in body["checks"] if c["id"] == "rdma_netns"]
    return proc.returncode, body, rdma


def sim(*args: str) -> None:
    proc = run_cli("sim", *args)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def cx5(make_host):
    return make_host(("cx5", 1, None)).root


def test_set_at_run_time_when_no_other_namespace_exists_and_persisted(cx5, write_config):
    config = write_config(CONFIG.format(mode="exclusive"))
    code, _, rdma = check(cx5, config)
    assert code == 1 and rdma["status"] == "fail" and rdma["seen"].startswith("shared, the config wants exclusive")
    assert not Path(cx5, OPTION).exists()  # check alone writes nothing
    code, body, rdma = check(cx5, config, "--fix")
    assert code == 0 and rdma["status"] == "ok", body
    assert body["fix"]["rdma_netns"]["after"] == "exclusive" and mode(cx5) == "exclusive"
    assert "options ib_core netns_mode=0" in Path(cx5, OPTION).read_text()
    assert body["reboot_required"] is None and not Path(cx5, RECORD).exists()
    # read first, set only when it differs: a second fix writes nothing, runs nothing
    before = Path(cx5, ".sriov-node-sim.log").read_text()
    stat = Path(cx5, OPTION).stat().st_mtime_ns
    code, body, rdma = check(cx5, config, "--fix")
    assert code == 0 and body["fix"]["rdma_netns"]["action"] == "nothing" and not body["fix"]["rdma_netns"]["changed"]
    assert Path(cx5, ".sriov-node-sim.log").read_text() == before and Path(cx5, OPTION).stat().st_mtime_ns == stat
    # and the next boot keeps it
    sim("reboot", cx5)
    assert mode(cx5) == "exclusive" and check(cx5, config)[2]["status"] == "ok"


def test_refused_while_pods_exist_then_given_by_the_reboot(cx5, write_config):
    config = write_config(CONFIG.format(mode="exclusive"))
    sim("netns", cx5, "3")  # pods: rdma_compatdev_set() answers EBUSY
    code, body, rdma = check(cx5, config, "--fix")
    fix = body["fix"]["rdma_netns"]
    assert code == 0 and mode(cx5) == "shared" and fix["after"] == "shared"
    assert "Device or resource busy" in fix["reboot_required"] and "reboot to use it" in fix["reboot_required"]
    assert rdma["status"] == "warn" and "reboot required" in rdma["seen"]
    assert body["reboot_required"] and "rdma_netns" in body["reboot_required"]
    status = run_cli("status", "--json", root=cx5, config=config)
    assert "rdma_netns" in json.loads(status.stdout)["reboot_required"]
    text = run_cli("status", root=cx5, config=config).stdout
    assert "reboot required:" in text and "exclusive" in text
    # asked again before the reboot: nothing new is written, the reboot is still the answer
    again = check(cx5, config, "--fix")[1]["fix"]["rdma_netns"]
    assert again["action"] == "pending" and not again["changed"]
    sim("reboot", cx5)
    assert mode(cx5) == "exclusive" and not Path(cx5, "run/sriov-node/reboot-required").exists()
    code, body, rdma = check(cx5, config)
    assert code == 0 and rdma["status"] == "ok" and body["reboot_required"] is None
    assert json.loads(run_cli("status", "--json", root=cx5, config=config).stdout)["reboot_required"] is None
    check(cx5, config, "--fix")
    assert not Path(cx5, RECORD).exists()  # its work done


def test_a_mode_the_reboot_did_not_give_is_named_once_and_not_retried(cx5, write_config):
    from sriov_node.sim.rdma import set_initramfs_mode

    config = write_config(CONFIG.format(mode="exclusive"))
    set_initramfs_mode(cx5, "shared")  # ib_core loads from an initramfs made before the option
    sim("netns", cx5, "1")
    assert check(cx5, config, "--fix")[1]["fix"]["rdma_netns"]["reboot_required"]
    sim("reboot", cx5)
    assert mode(cx5) == "shared"
    for _ in range(2):
        code, body, rdma = check(cx5, config, "--fix")
        fix = body["fix"]["rdma_netns"]
        assert code == 1 and fix["action"] == "failed" and not fix["changed"] and fix["reboot_required"] is None
        assert "not tried again" in fix["problems"][0] and "initramfs" in fix["problems"][0]
        assert rdma["status"] == "fail" and "after the reboot" in rdma["seen"]
        assert body["reboot_required"] is None and not Path(cx5, "run/sriov-node/reboot-required").exists()
        assert mode(cx5) == "shared"  # no run-time set either: named, not retried
    assert json.loads(Path(cx5, RECORD).read_text())["failed"] is True
    assert json.loads(run_cli("status", "--json", root=cx5, config=config).stdout)["reboot_required"] is None


def test_without_ib_core_only_the_option_is_written(make_host, write_config):
    root = make_host(("x710", 1, None)).root  # no RDMA NIC: ib_core is not loaded
    config = write_config(CONFIG.format(mode="exclusive"))
    code, _, rdma = check(root, config)
    assert rdma["status"] == "warn" and "not loaded" in rdma["seen"]
    code, body, rdma = check(root, config, "--fix")
    assert code == 0 and rdma["status"] == "ok" and body["reboot_required"] is None
    assert "netns_mode=0" in Path(root, OPTION).read_text()


def test_an_option_elsewhere_that_overrides_is_named(cx5, write_config):
    Path(cx5, "etc/modprobe.d").mkdir(parents=True, exist_ok=True)
    Path(cx5, "etc/modprobe.d/zz-local.conf").write_text("options ib_core netns_mode=1\n")
    config = write_config(CONFIG.format(mode="exclusive"))
    code, body, _ = check(cx5, config, "--fix")
    fix = body["fix"]["rdma_netns"]
    assert code == 1 and "/etc/modprobe.d/zz-local.conf gives ib_core netns_mode for shared" in fix["problems"][0]
    assert mode(cx5) == "shared"


def test_no_rdma_netns_no_check(cx5, write_config):
    body = json.loads(run_cli("check", "--json", root=cx5, config=write_config(CONFIG.replace(
        'rdma_netns = "{mode}"', ""))).stdout)
    assert not [c for c in body["checks"] if c["id"] == "rdma_netns"]


def test_a_bad_mode_is_refused_naming_the_key(cx5, write_config):
    proc = run_cli("check", "--fix", root=cx5, config=write_config(CONFIG.format(mode="private")))
    assert proc.returncode == 2 and "rdma_netns: 'private' is not one of: exclusive, shared" in proc.stderr
    assert not Path(cx5, OPTION).exists()


def test_apply_brings_the_mode_about_as_check_fix_does(cx5, write_config):
    """`apply` converges every part of the desired state: the mode too (the dry run says it would, and
    `--detailed-exitcode` says changes are pending); a second apply changes nothing."""
    config = write_config(CONFIG.format(mode="exclusive"))
    dry = run_cli("apply", "--dry-run", "--detailed-exitcode", root=cx5, config=config)
    assert dry.returncode == 2 and "rdma system set netns exclusive" in dry.stdout + dry.stderr
    assert mode(cx5) == "shared" and not Path(cx5, OPTION).exists()
    run = run_cli("apply", "--json", root=cx5, config=config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["rdma_netns"]["after"] == "exclusive" and mode(cx5) == "exclusive"
    assert "options ib_core netns_mode=0" in Path(cx5, OPTION).read_text()
    again = json.loads(run_cli("apply", "--json", root=cx5, config=config).stdout)
    assert again["rdma_netns"]["action"] == "nothing" and not again["rdma_netns"]["changed"]
    dry = run_cli("apply", "--dry-run", "--detailed-exitcode", root=cx5, config=config)
    assert dry.returncode == 0, dry.stdout + dry.stderr


def test_apply_while_pods_exist_leaves_the_mode_to_the_reboot_and_says_so(cx5, write_config):
    config = write_config(CONFIG.format(mode="exclusive"))
    sim("netns", cx5, "3")
    run = run_cli("apply", root=cx5, config=config)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "reboot to use it" in run.stdout + run.stderr
    status = run_cli("status", root=cx5, config=config)
    assert "reboot" in status.stdout + status.stderr
