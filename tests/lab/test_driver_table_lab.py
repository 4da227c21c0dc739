"""sriov_node/drivers.py against the real drivers the lab has (igb on QEMU's 82576, netdevsim, nvme).

Every refusal a row implies (`drivers.implied_refusals`: the domain tests/test_driver_table.py walks
on the simulated kernel) is refused by `validate`, the dry run and `apply` before any write (strace
shows none), and the same step sent raw gets the errno the table predicts from the kernel itself.
One guest boot (tests/lab/guest_driver_table.py).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Set

import pytest

from sriov_node import drivers
from tests.lab.conftest import boot, need_igb

ROWS = ("igb", "netdevsim", "nvme")


@pytest.fixture(scope="module")
def table() -> Dict[str, Any]:
    need_igb()
    return boot("table", script="tests/lab/guest_driver_table.py", LAB_IGB="1", LAB_TIMEOUT="900")


def predicted(row: drivers.Driver, case: drivers.Case, pf_id: str, speed: str) -> Set[str]:
    """The errnos the table says the kernel answers to the case's step."""
    if "eswitch_mode" in case.pf and not case.vf:
        found = drivers.eswitch_refusal(row, case.pf["eswitch_mode"])
        return {found.errno} if found else set()
    if "mtu" in case.pf:
        return {drivers.mtu_refusal(row, case.pf["mtu"]).errno}
    known = int(speed) if speed.lstrip("-").isdigit() else None  # netdevsim's `speed` answers EINVAL
    link = -1 if case.pf_down else case.link_speed if case.link_speed is not None else known
    return {r.errno for r in drivers.setting_refusals(row, 0, dict(case.vf), pf_id=pf_id,
                                                     switchdev=case.pf.get("eswitch_mode") == "switchdev",
                                                     link_speed=link)}


CASES = [pytest.param(name, case, id=f"{name}-{case.label}")
         for name in ROWS for case in drivers.implied_refusals(drivers.DRIVERS[name])]


@pytest.mark.parametrize("name,case", CASES)
def test_each_refusal_of_the_table_is_the_kernels(table, name, case):
    got = table["cases"][f"{name}-{case.label}"]
    if "skipped" in got:
        pytest.skip(got["skipped"])
    for step in ("validate", "dry_run", "apply"):
        assert got[step]["rc"] == 1, (step, got[step])
    assert json.loads(got["validate"]["stdout"])["valid"] is False
    assert got["apply"]["writes"] == [], got["apply"]  # refused before any write
    expected = predicted(drivers.DRIVERS[name], case, got.get("pf_id") or "", got.get("speed") or "")
    assert expected, case
    assert got["raw"]["errno"] in expected, (got["raw"], expected)


def test_every_row_is_put_to_the_kernel(table):
    """No row passes by skipping every case: each lab driver answers at least one refusal for real."""
    for name in ROWS:
        cases = [v for k, v in table["cases"].items() if k.startswith(f"{name}-")]
        assert cases and any("skipped" not in c for c in cases), (name, table["cases"].keys())
