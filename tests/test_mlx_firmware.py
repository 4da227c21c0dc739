"""mlx5's firmware SR-IOV settings: the query output parsed and judged (read-only, with the command
to fix and "needs a power cycle"), and a num_vfs above the firmware's limit named as such."""

from __future__ import annotations

import json

from sriov_node.checks.diagnose import FAIL, OK, SKIP, WARN
from sriov_node.checks.firmware import check_mlx_firmware, parse_query
from tests.helpers import PF0, run_cli

QUERY = """
Device #1:
----------

Device type:    ConnectX5
Name:           MCX556A-ECA_Ax
Description:    ConnectX-5 VPI adapter card; EDR IB (100Gb/s) and 100GbE; dual-port QSFP28
Device:         0000:20:00.0

Configurations:                              Default         Current         Next Boot
*        NUM_OF_VFS                          8               {now}               {later}
         SRIOV_EN                            True(1)         {en}         True(1)
"""


def _query(now=16, later=16, en="True(1)"):
    return QUERY.format(now=now, later=later, en=en)


def test_the_query_table_is_parsed():
    params = parse_query(_query(4, 16))
    assert params["NUM_OF_VFS"] == {"Default": "8", "Current": "4", "Next Boot": "16"}
    assert params["SRIOV_EN"]["Current"] == "True(1)"


def test_the_firmware_is_judged_against_the_block():
    ok = check_mlx_firmware(PF0, "ens1f0", "pf[0]", 8, "mstconfig", _query())
    assert ok.status == OK and "NUM_OF_VFS 16" in ok.seen
    low = check_mlx_firmware(PF0, "ens1f0", "pf[0]", 8, "mstconfig", _query(4, 4))
    assert low.status == FAIL and f"mstconfig -d {PF0} set SRIOV_EN=1 NUM_OF_VFS=8" in low.fix
    assert "power cycle" in low.fix
    pending = check_mlx_firmware(PF0, "ens1f0", "pf[0]", 8, "mstconfig", _query(4, 16))
    assert pending.status == FAIL and "needs a power cycle" in pending.seen
    off = check_mlx_firmware(PF0, "ens1f0", "pf[0]", 2, "mstconfig", _query(en="False(0)"))
    assert off.status == FAIL and "SRIOV_EN False" in off.seen
    later = check_mlx_firmware(PF0, "ens1f0", "pf[0]", 8, "mstconfig", _query(16, 2))
    assert later.status == WARN and "next power cycle" in later.seen
    assert check_mlx_firmware(PF0, "ens1f0", "pf[0]", 8, None, None).status == SKIP


def test_num_vfs_above_the_firmware_limit_is_named_as_such(make_host, write_config):
    host = make_host(("cx5", 1, 4))  # the firmware's NUM_OF_VFS: sriov_totalvfs 4
    config = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n')
    for argv in (["validate", "--json"], ["apply", "--dry-run", "--detailed-exitcode", "--json"]):
        done = run_cli(*argv, root=host.root, config=config)
        assert done.returncode == 1, done.stderr
        text = done.stdout + done.stderr
        assert "the firmware's limit" in text and "NUM_OF_VFS" in text, text
        assert f"mstconfig -d {PF0} set SRIOV_EN=1 NUM_OF_VFS=8" in text and "power cycle" in text
    body = json.loads(run_cli("validate", "--json", root=host.root, config=config).stdout)
    assert body["failures"][0]["kind"] == "capacity"


def test_check_reads_the_firmware_through_the_hosts_mstconfig(make_host, write_config):
    import subprocess

    host = make_host(("cx5", 1, None))
    config = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n')
    body = json.loads(run_cli("check", "--json", root=host.root, config=config).stdout)
    (fw,) = [c for c in body["checks"] if c["id"] == "firmware_sriov"]
    assert fw["status"] == "ok" and "NUM_OF_VFS 16" in fw["seen"]
    before = open(f"{host.root}/sys/bus/pci/devices/{PF0}/sriov_totalvfs").read()
    # the operator lowers it for the next boot (the tool's own `set`): check warns, writes nothing
    subprocess.run([f"{host.root}/usr/bin/mstconfig", "-d", PF0, "set", "NUM_OF_VFS=4"], check=True,
                   capture_output=True)
    body = json.loads(run_cli("check", "--json", root=host.root, config=config).stdout)
    (fw,) = [c for c in body["checks"] if c["id"] == "firmware_sriov"]
    assert fw["status"] == "warn" and "next boot" in fw["seen"] and "power cycle" in fw["fix"]
    assert open(f"{host.root}/sys/bus/pci/devices/{PF0}/sriov_totalvfs").read() == before
