"""ib_core's network namespace mode (`rdma_netns`) on a real kernel: a soft-RoCE device (`rdma_rxe`,
`rdma link add rxe0 type rxe netdev <netdevsim>`) under Linux 6.1; `sriov-node apply` reads the mode,
sets it when it differs and reads it back; a second apply runs nothing; with a second network namespace
the kernel refuses a change (rdma_compatdev_set: EBUSY) and apply leaves the mode to the next boot,
says "reboot required", and the next apply does not try again. The mode is read with `rdma system show`
(iproute2), independently of sriov-node; the `rdma` runs sriov-node makes are counted with strace.

One boot (the default shell init, tests/lab/guest_hpc.py `rdma`) answers every test here.
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from tests.lab.conftest import boot


@pytest.fixture(scope="module")
def rdma() -> Dict[str, Any]:
    return boot("rdma", "tests/lab/guest_hpc.py")


def netns(run: Dict[str, Any]) -> Dict[str, Any]:
    assert run["body"] is not None, run
    return run["body"]["rdma_netns"]


def test_the_lab_kernel_has_soft_roce_and_ib_core_starts_shared(rdma):
    assert rdma["modinfo"]["rc"] == 0 and "rdma_rxe" in rdma["modinfo"]["stdout"], rdma["modinfo"]
    assert rdma["setup"]["rc"] == 0 and rdma["link_add"]["rc"] == 0, (rdma["setup"], rdma["link_add"])
    assert "rxe0" in rdma["rdma_link"]["stdout"], rdma["rdma_link"]
    assert rdma["show_before"]["mode"] == "shared" and rdma["show_before"]["param"] == "Y", rdma["show_before"]


def test_apply_sets_exclusive_at_run_time_and_reads_it_back(rdma):
    run = rdma["apply_set"]
    assert run["rc"] == 0, run
    out = netns(run)
    assert (out["before"], out["action"], out["after"], out["changed"]) == ("shared", "runtime", "exclusive", True)
    assert len(run["rdma_execs"]) == 1 and "exclusive" in run["rdma_execs"][0], run["rdma_execs"]
    assert rdma["show_set"]["mode"] == "exclusive" and rdma["show_set"]["param"] == "N", rdma["show_set"]
    assert "options ib_core netns_mode=0" in rdma["option"]


def test_a_second_apply_changes_and_runs_nothing(rdma):
    run = rdma["apply_again"]
    assert run["rc"] == 0, run
    out = netns(run)
    assert out["action"] == "nothing" and not out["changed"] and out["problems"] == [], out
    assert run["rdma_execs"] == [] and run["body"]["writes"] == 0, run
    assert rdma["show_again"]["mode"] == "exclusive"


def test_another_network_namespace_makes_the_kernel_refuse_and_apply_asks_for_a_reboot(rdma):
    assert rdma["netns_add"]["rc"] == 0, rdma["netns_add"]
    raw = rdma["raw_busy"]  # the kernel's own answer: EBUSY while a netns besides init_net exists
    assert raw["rc"] != 0 and "busy" in (raw["stdout"] + raw["stderr"]).lower(), raw
    run = rdma["apply_busy"]
    assert run["rc"] == 0, run
    out = netns(run)
    assert out["action"] == "runtime" and out["after"] == "exclusive", out
    assert len(run["rdma_execs"]) == 1, run["rdma_execs"]
    assert out["reboot_required"] and "reboot" in out["reboot_required"], out
    assert "rdma_netns" in rdma["reboot_required"]
    assert "options ib_core netns_mode=1" in rdma["option_busy"]  # the next load of ib_core gets shared
    assert rdma["show_busy"]["mode"] == "exclusive", rdma["show_busy"]


def test_the_next_apply_does_not_try_again_and_status_and_check_say_reboot(rdma):
    run = rdma["apply_busy_again"]
    assert run["rc"] == 0, run
    out = netns(run)
    assert out["action"] == "pending" and not out["changed"] and out["reboot_required"] is None, out
    assert run["rdma_execs"] == [], run["rdma_execs"]
    assert rdma["show_busy_again"]["mode"] == "exclusive"
    status = json.loads(rdma["status"]["stdout"])
    assert status["reboot_required"] and "rdma_netns" in json.dumps(status["reboot_required"]), status
    (check,) = [c for c in json.loads(rdma["check"]["stdout"])["checks"] if c["id"] == "rdma_netns"]
    assert check["status"] == "warn" and "reboot required" in check["seen"], check
