"""InfiniBand VF GUIDs (`guid = "auto"`, `node_guid`/`port_guid`) on the simulated ConnectX-6 in
InfiniBand mode, through the CLI: derived the same on every apply and every rebuild of the node, unique
across VFs and PFs, set while the VFs are unbound (mlx5_ib takes a VF's GUID when it probes it), read
back through netlink's VF info, zero writes on re-apply; refused before any write where they cannot be."""

from __future__ import annotations

import json
import os
import struct
import sys
import textwrap

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from sriov_node.host import vfinfo
from sriov_node.model import derive_vf_guid
from sriov_node.sim.build import create_host
from tests.helpers import open_host, run_cli, sim_writes

PF0, PF1, CX5 = "0000:20:00.0", "0000:20:00.1", "0000:30:00.0"

AUTO = """\
version = 1
[[pf]]
pci = "0000:20:00.0"
num_vfs = 4
[[pf.vfs]]
range = "0-3"
driver = "mlx5_core"
guid = "auto"
[[pf]]
pci = "0000:20:00.1"
num_vfs = 4
[[pf.vfs]]
range = "0-3"
guid = "auto"
"""


def _host(root):
    create_host(str(root), (("cx6-ib", 2, None), ("cx5", 1, None)))
    return open_host(str(root))


def _config(tmp_path, text, name="config.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def _guids(host, ifname):
    return {i: (links.node_guid, links.port_guid) for i, links in open_host(host.root).links.vf_links(ifname).items()}


def _rdma_node_guid(host, vf_pci):
    """The node GUID the VF's RDMA device shows: what mlx5_ib read when it probed the VF."""
    d = os.path.join(host.root, "sys/bus/pci/devices", vf_pci, "infiniband")
    (name,) = os.listdir(d)
    raw = open(os.path.join(d, name, "node_guid")).read().strip().replace(":", "")
    return ":".join(raw[i:i + 2] for i in range(0, 16, 2))


def _vf_pci(host, pf, index):
    return os.path.basename(os.readlink(os.path.join(host.root, "sys/bus/pci/devices", pf, f"virtfn{index}")))


def test_auto_guids_are_derived_unique_stable_and_taken_by_the_vfs(tmp_path):
    host = _host(tmp_path / "a")
    cfg = _config(tmp_path, AUTO)
    proc = run_cli("apply", root=host.root, config=cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = {pf: _guids(host, name) for pf, name in ((PF0, "ibs1f0"), (PF1, "ibs1f1"))}
    every = [g for pf in first.values() for pair in pf.values() for g in pair]
    assert len(every) == 16 and len(set(every)) == 16  # unique across VFs, kinds and PFs
    assert all(int(g[:2], 16) & 0x02 for g in every)  # locally administered: never a vendor's GUID
    pf_guid = "0c:42:a1:03:00:" + open(os.path.join(host.root, "sys/class/net/ibs1f0/address")).read().strip()[-8:]
    assert first[PF0][2] == (derive_vf_guid(pf_guid, 2, False), derive_vf_guid(pf_guid, 2, True))
    # each VF's driver took its GUID: it was set while the VF was unbound, the VF bound after
    for i in range(4):
        assert _rdma_node_guid(host, _vf_pci(host, PF0, i)) == first[PF0][i][0]
        assert _rdma_node_guid(host, _vf_pci(host, PF1, i)) == first[PF1][i][0]
    # status shows each VF's GUIDs as the kernel reports them
    status = json.loads(run_cli("status", "--json", root=host.root, config=cfg).stdout)
    (pf0,) = [p for p in status["pfs"] if p["pci"] == PF0]
    assert [(v["guids"]["node_guid"], v["guids"]["port_guid"]) for v in pf0["vfs"]] == [first[PF0][i] for i in range(4)]
    # re-apply: nothing to write
    before = len(sim_writes(host))
    proc = run_cli("apply", root=host.root, config=cfg)
    assert proc.returncode == 0 and "unchanged" in proc.stdout
    assert len(sim_writes(host)) == before
    # the node rebuilt (a reboot: the PF driver's VF GUIDs are gone): the same GUIDs again
    again = _host(tmp_path / "b")
    assert run_cli("apply", root=again.root, config=cfg).returncode == 0
    assert {pf: _guids(again, name) for pf, name in ((PF0, "ibs1f0"), (PF1, "ibs1f1"))} == first


def test_guids_added_to_bound_vfs_unbind_set_and_bind_again(tmp_path):
    host = _host(tmp_path / "a")
    plain = _config(tmp_path, """\
        version = 1
        [[pf]]
        pci = "0000:20:00.0"
        num_vfs = 2
        [[pf.vfs]]
        range = "0-1"
        driver = "mlx5_core"
        """, "plain.toml")
    assert run_cli("apply", root=host.root, config=plain).returncode == 0
    assert _rdma_node_guid(host, _vf_pci(host, PF0, 0)) == "00:00:00:00:00:00:00:00"
    explicit = _config(tmp_path, """\
        version = 1
        [[pf]]
        pci = "0000:20:00.0"
        num_vfs = 2
        [[pf.vfs]]
        range = "0"
        driver = "mlx5_core"
        node_guid = "02:11:22:33:44:55:66:77"
        port_guid = "02:11:22:33:44:55:66:78"
        [[pf.vfs]]
        range = "1"
        driver = "mlx5_core"
        """, "explicit.toml")
    dry = run_cli("apply", "--dry-run", "--json", root=host.root, config=explicit)
    ops = [(a["phase"], a["op"]) for a in __import__("json").loads(dry.stdout)["pfs"][0]["actions"]]
    assert ops == [("guids", "unbind_driver"), ("guids", "set_vf_guids"), ("bindings", "bind_driver")], ops
    assert run_cli("apply", root=host.root, config=explicit).returncode == 0
    assert _guids(host, "ibs1f0")[0] == ("02:11:22:33:44:55:66:77", "02:11:22:33:44:55:66:78")
    assert _rdma_node_guid(host, _vf_pci(host, PF0, 0)) == "02:11:22:33:44:55:66:77"
    # a VF rebound by hand reads back the same; nothing to write
    vf = _vf_pci(host, PF0, 0)
    host.sysfs.unbind(vf, "mlx5_core")
    host.sysfs.bind(vf, "mlx5_core")
    assert _rdma_node_guid(host, vf) == "02:11:22:33:44:55:66:77"
    before = len(sim_writes(host))
    proc = run_cli("apply", root=host.root, config=explicit)
    assert proc.returncode == 0 and "unchanged" in proc.stdout and len(sim_writes(host)) == before


@pytest.mark.parametrize("command", [("validate",), ("apply", "--dry-run"), ("apply",)])
def test_guids_on_an_ethernet_pf_are_refused_naming_it_before_any_write(tmp_path, command):
    host = _host(tmp_path / "a")
    cfg = _config(tmp_path, """\
        version = 1
        [[pf]]
        pci = "0000:30:00.0"
        num_vfs = 2
        [[pf.vfs]]
        range = "0-1"
        guid = "auto"
        """)
    before = len(sim_writes(host))
    proc = run_cli(*command, root=host.root, config=cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert CX5 in out and "InfiniBand" in out and "Ethernet" in out and "guid" in out
    assert len(sim_writes(host)) == before


@pytest.mark.parametrize("group,words", [
    ('node_guid = "02:11:22:33:44:55:66"', ["pf[0].vfs[0].node_guid", "xx:xx:xx:xx:xx:xx:xx:xx"]),
    ('port_guid = "00:00:00:00:00:00:00:00"', ["pf[0].vfs[0].port_guid", "all zeros"]),
    ('range = "0-1"\nnode_guid = "02:11:22:33:44:55:66:77"', ["pf[0].vfs[0].node_guid", "each VF needs its own"]),
    ('guid = "random"', ["pf[0].vfs[0].guid", "auto"]),
    ('guid = "auto"\nnode_guid = "02:11:22:33:44:55:66:77"', ["pf[0].vfs[0].guid", "drop node_guid"]),
], ids=["short", "zero", "multi-vf", "not-auto", "auto-and-explicit"])
def test_bad_guid_keys_are_config_errors_naming_the_key(tmp_path, group, words):
    host = _host(tmp_path / "a")
    body = group if group.startswith("range") else 'range = "0"\n' + group
    cfg = _config(tmp_path, 'version = 1\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n[[pf.vfs]]\n' + body + "\n")
    before = len(sim_writes(host))
    proc = run_cli("validate", root=host.root, config=cfg)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for word in words:
        assert word in proc.stdout + proc.stderr
    assert len(sim_writes(host)) == before


def _infos(data):
    out, at = [], 0
    while at + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, at)
        out.append((kind, data[at + 4:at + length]))
        at += (length + 3) & ~3
    return out


def test_each_guid_travels_in_an_ifla_vf_info_of_its_own_as_pyroute2_encodes_it():
    """do_setvfinfo returns after IFLA_VF_IB_NODE_GUID: a port GUID beside it would never be applied."""
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    payload = vfinfo.encode_vfinfo_list([(3, {"node_guid": "02:11:22:33:44:55:66:77",
                                              "port_guid": "02:11:22:33:44:55:66:78"})])
    infos = _infos(payload)
    assert [kind for kind, _ in infos] == [1, 1]
    (node,), (port,) = (_infos(body) for _, body in infos)
    assert (node[0], port[0]) == (vfinfo.IFLA_VF_IB_NODE_GUID, vfinfo.IFLA_VF_IB_PORT_GUID)
    # the same bytes pyroute2 encodes for the attribute, and its parser reads ours back as its own
    theirs = ifinfmsg.vflist.vfinfo.vf_ib_node_guid()
    theirs["vf"], theirs["ib_node_guid"] = 3, "02:11:22:33:44:55:66:77"
    theirs.encode()
    assert bytes(theirs.data[4:theirs.length]) == node[1]
    parsed = ifinfmsg.vflist.vfinfo.vf_ib_port_guid(bytearray(vfinfo._nla(11, port[1])))
    parsed.decode()
    assert parsed["vf"] == 3 and parsed["ib_port_guid"] == "02:11:22:33:44:55:66:78"
    # and the kernel's 16-byte answer reads back
    answer = vfinfo._nla(vfinfo.IFLA_VF_MAC, struct.pack("=I", 3) + bytes(32)) + \
        vfinfo._nla(10, struct.pack("=I4xQ", 3, 0x0211223344556677))
    (attrs,) = vfinfo.vf_attributes(vfinfo._nla(1, answer), 0, len(answer) + 4)
    assert vfinfo.vf_links(vfinfo._nla(1, answer), attrs)[1].node_guid == "02:11:22:33:44:55:66:77"


def test_a_run_stopped_after_the_guid_unbinds_binds_the_vfs_back(tmp_path):
    """The GUIDs are set while the VFs are unbound: a run stopped there (a signal between actions)
    runs its clean-up, which binds each VF back to the driver it had; the next run sets the GUIDs."""
    from sriov_node.config import load_config
    from sriov_node.engine.outcome import INTERRUPTED
    from sriov_node.engine.reconcile import reconcile

    host = _host(tmp_path / "a")
    plain = _config(tmp_path, 'version = 1\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n', "plain.toml")
    assert run_cli("apply", root=host.root, config=plain).returncode == 0
    auto = _config(tmp_path, 'version = 1\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'
                             '[[pf.vfs]]\nrange = "0-1"\nguid = "auto"\n', "auto.toml")
    live = open_host(host.root)
    vfs = [_vf_pci(host, PF0, i) for i in range(2)]

    def stopped() -> bool:  # a signal as soon as the first VF was unbound for its GUID
        return any(live.sysfs.device_driver(vf) is None for vf in vfs)

    report = reconcile(live, load_config(auto), cancelled=stopped)
    assert report.outcomes[0].status == INTERRUPTED
    assert [open_host(host.root).sysfs.device_driver(vf) for vf in vfs] == ["mlx5_core", "mlx5_core"]
    assert run_cli("apply", root=host.root, config=auto).returncode == 0
    assert all(g != "00:00:00:00:00:00:00:00" for g in _guids(host, "ibs1f0")[0])


NO_GUIDS = AUTO.replace('guid = "auto"\n', "")
ZERO_GUID = "00:00:00:00:00:00:00:00"


@pytest.mark.parametrize("start", ["vfs-there", "made-by-the-change"])
@pytest.mark.parametrize("undo", ["edit", "rollback", "unset"])
def test_guids_a_change_set_go_back_whole_when_it_is_taken_back(tmp_path, start, undo):
    """Undo is whole for GUIDs too: dropping `guid` (an edit, a rollback, `unset`) puts back the GUIDs
    the VFs had before sriov-node set them, read before it first did (the kernel's, for VFs the same
    change made), and each VF's driver takes them again (unbound while set, bound after)."""
    host = _host(tmp_path / "h")
    cfg = tmp_path / "config.toml"
    if start == "vfs-there":
        cfg.write_text(NO_GUIDS)
        assert run_cli("apply", root=host.root, config=str(cfg)).returncode == 0
    else:
        cfg.write_text(NO_GUIDS.replace("num_vfs = 4", "num_vfs = 0").replace('[[pf.vfs]]\nrange = "0-3"\ndriver = "mlx5_core"\n', "")
                       .replace('[[pf.vfs]]\nrange = "0-3"\n', ""))
        assert run_cli("apply", root=host.root, config=str(cfg)).returncode == 0
    before = {name: _guids(host, name) for name in ("ibs1f0", "ibs1f1")}
    cfg.write_text(AUTO)
    proc = run_cli("apply", "--checkpoint", "600", root=host.root, config=str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = {name: _guids(host, name) for name in ("ibs1f0", "ibs1f1")}
    assert len(after["ibs1f0"]) == 4 and after["ibs1f0"] != before["ibs1f0"]
    if undo == "edit":
        cfg.write_text(NO_GUIDS)
        proc = run_cli("apply", root=host.root, config=str(cfg))
    elif undo == "rollback":
        proc = run_cli("rollback", root=host.root, config=str(cfg))
    else:
        proc = run_cli("unset", PF0, "vfs[0-3].guid", root=host.root, config=str(cfg))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    now = {name: _guids(host, name) for name in ("ibs1f0", "ibs1f1")}
    if start == "vfs-there":
        expected0 = before["ibs1f0"]
    else:  # the VFs the change made: what the kernel gave them (mlx5 reports 0 for a GUID never set)
        expected0 = {i: (ZERO_GUID, ZERO_GUID) for i in range(4)}
    if undo == "unset":
        assert now["ibs1f0"] == expected0 and now["ibs1f1"] == after["ibs1f1"]  # only what was unset
    elif undo == "rollback" and start == "made-by-the-change":
        assert not now["ibs1f0"]  # the generation before had no VFs: they went with the count
    else:
        assert now["ibs1f0"] == expected0
    for i, (node, _port) in now["ibs1f0"].items():
        assert _rdma_node_guid(host, _vf_pci(host, PF0, i)) == node  # the driver took it: set unbound, bound after
    writes = len(sim_writes(host))
    again = run_cli("apply", root=host.root, config=str(cfg))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(sim_writes(host)) == writes  # what was put back is the file's state now: nothing to write


def test_capture_records_the_guids_set_and_its_apply_writes_nothing(tmp_path):
    """`capture` keeps what was given: `guid = "auto"` where both GUIDs are the derived ones, a VF's own
    node_guid/port_guid otherwise (one VF per group), nothing for VFs never given one (mlx5 reports 0)."""
    host = _host(tmp_path / "h")
    given = AUTO.replace('[[pf]]\npci = "0000:20:00.1"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\nguid = "auto"\n',
                         '[[pf]]\npci = "0000:20:00.1"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "1"\n'
                         'node_guid = "02:00:00:00:00:00:01:01"\nport_guid = "02:00:00:00:00:00:01:02"\n')
    assert given != AUTO
    cfg = _config(tmp_path, given)
    assert run_cli("apply", root=host.root, config=cfg).returncode == 0
    out = tmp_path / "captured.toml"
    proc = run_cli("capture", "--output", str(out), root=host.root)
    assert proc.returncode == 0, proc.stderr
    doc = tomllib.loads(out.read_text())
    (first,) = [b for b in doc["pf"] if b["pci"] == PF0]
    (second,) = [b for b in doc["pf"] if b["pci"] == PF1]
    assert [(g["range"], g.get("guid")) for g in first["vfs"]] == [("0-3", "auto")]
    assert [g for g in second.get("vfs", []) if any(k in g for k in ("guid", "node_guid", "port_guid"))] == \
        [{"range": "1", "node_guid": "02:00:00:00:00:00:01:01", "port_guid": "02:00:00:00:00:00:01:02"}]
    writes = len(sim_writes(host))
    again = run_cli("apply", root=host.root, config=str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(sim_writes(host)) == writes  # the capture is the host's state: nothing to write


ONE_PF = 'version = 1\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\nguid = "auto"\n'


def _readback_host(root, netlink, ofed_sysfs):
    from sriov_node.sim.kernel import SimKernel

    host = _host(root)
    SimKernel(host.root).ib_vf_guid_readback(netlink=netlink, ofed_sysfs=ofed_sysfs)
    return host


@pytest.mark.parametrize("netlink,ofed_sysfs", [(True, False), (False, True), (True, True)],
                         ids=["netlink", "ofed-sysfs-only", "both"])
def test_guids_are_read_back_through_netlink_else_mlnx_ofed_sysfs(tmp_path, netlink, ofed_sysfs):
    """A kernel before 5.5 (or an MLNX_OFED build) reports no GUIDs in netlink's VF info; MLNX_OFED's
    mlx5_core shows them in <PF>/sriov/<N>/{node,port}: read back there, converged, nothing to write again."""
    host = _readback_host(tmp_path / "h", netlink, ofed_sysfs)
    cfg = _config(tmp_path, ONE_PF)
    proc = run_cli("apply", root=host.root, config=cfg)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pf_guid = "0c:42:a1:03:00:" + open(os.path.join(host.root, "sys/class/net/ibs1f0/address")).read().strip()[-8:]
    wanted = [(derive_vf_guid(pf_guid, i, False), derive_vf_guid(pf_guid, i, True)) for i in range(2)]
    if ofed_sysfs:  # the files as MLNX_OFED's sriov_sysfs.c prints them
        ofed = os.path.join(host.root, "sys/bus/pci/devices", PF0, "sriov")
        assert [(open(os.path.join(ofed, str(i), "node")).read(), open(os.path.join(ofed, str(i), "port")).read())
                for i in range(2)] == [(n + "\n", p + "\n") for n, p in wanted]
    if not netlink:
        assert set(_guids(host, "ibs1f0").values()) == {(None, None)}  # netlink's VF info has none
    status = json.loads(run_cli("status", "--json", root=host.root, config=cfg).stdout)
    (pf0,) = [p for p in status["pfs"] if p["pci"] == PF0]
    assert pf0["converged"], pf0
    assert [(v["guids"]["node_guid"], v["guids"]["port_guid"]) for v in pf0["vfs"]] == wanted
    # status says where they were read (netlink wins where it reports them)
    assert pf0["vf_guids_from"] == ("netlink" if netlink else "sysfs")
    text = run_cli("status", root=host.root, config=cfg).stdout
    assert f"VF GUIDs read from {pf0['vf_guids_from']}" in [l for l in text.splitlines() if PF0 in l][0], text
    before = len(sim_writes(host))
    again = run_cli("apply", root=host.root, config=cfg)
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr
    assert len(sim_writes(host)) == before
    # a GUID changed behind sriov-node's back is seen through the same read-back, and set again
    open_host(host.root).links.set_vf_links("ibs1f0", [(1, {"node_guid": "02:00:00:00:00:00:00:09"})])
    status = json.loads(run_cli("status", "--json", root=host.root, config=cfg).stdout)
    assert not [p for p in status["pfs"] if p["pci"] == PF0][0]["converged"]
    assert run_cli("apply", root=host.root, config=cfg).returncode == 0
    assert json.loads(run_cli("status", "--json", root=host.root, config=cfg).stdout)["pfs"][0]["converged"]


def test_guids_neither_source_reports_are_never_converged_and_named(tmp_path):
    """Neither netlink's VF info nor MLNX_OFED's sysfs reports the GUIDs: what was set cannot be read
    back. The run that set them fails naming the PF, the VFs and why; a later apply is refused before
    any write (the VFs are not unbound again for GUIDs no one can verify); status says it differs."""
    host = _readback_host(tmp_path / "h", False, False)
    cfg = _config(tmp_path, ONE_PF)
    proc = run_cli("apply", root=host.root, config=cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "converged" not in proc.stdout.split("\n", 1)[0]
    assert PF0 in out and "VF 0: node_guid cannot be read back" in out and "VF 1: port_guid" in out
    assert "Linux 5.5" in out and "sriov/<N>/node" in out
    # the remedy is the kernel's or the config's: running again cannot help
    assert "drop guid/node_guid/port_guid" in out and "re-run sriov-node apply" not in out
    before = len(sim_writes(host))
    checked = run_cli("validate", root=host.root, config=cfg)  # what apply would refuse, validate names
    assert checked.returncode == 1 and "cannot be read back" in checked.stderr, checked.stdout + checked.stderr
    again = run_cli("apply", root=host.root, config=cfg)
    out = again.stdout + again.stderr
    assert again.returncode == 1, out
    assert "refused" in out and "VF(s) 0-1" in out and "cannot be read back" in out and "nothing was written" in out
    assert len(sim_writes(host)) == before
    status = run_cli("status", "--json", root=host.root, config=cfg)
    (pf0,) = [p for p in json.loads(status.stdout)["pfs"] if p["pci"] == PF0]
    assert not pf0["converged"]
    text = run_cli("status", root=host.root, config=cfg).stdout
    assert "DIFFERS" in text and "cannot be read back" in text


def test_a_failed_netlink_read_back_keeps_the_advice_to_run_again(tmp_path):
    """GUIDs that could not be read because the netlink read itself failed (EBUSY, this once) are
    not the kernel's lack of GUID reporting: the run says why and to run again, not to change kernel."""
    import errno

    from sriov_node.config import load_config
    from sriov_node.engine.reconcile import reconcile

    host = _host(tmp_path / "h")
    plain = host.links.vf_links
    reads = []

    def vf_links(ifname, ifindex=None):
        reads.append(ifname)
        if host.writes:  # the verification's read, after the run wrote
            raise OSError(errno.EBUSY, "Device or resource busy")
        return plain(ifname, ifindex)

    host.links.vf_links = vf_links
    report = reconcile(host, load_config(_config(tmp_path, ONE_PF)))
    (pf0,) = [o for o in report.outcomes if o.pci == PF0]
    assert reads and pf0.status == "failed", pf0
    assert "cannot be read back: EBUSY" in pf0.error and "re-run sriov-node apply" in pf0.error, pf0.error
    assert "Linux 5.5" not in pf0.error
