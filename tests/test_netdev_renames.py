"""A netdev's name is not its identity: udev renames a PF's netdev just after its driver probes it
(eth1 -> enp4s0) and a VF's after its VF driver does, and the kernel gives the freed name to the
next netdev that comes (often a new VF's). Seen in the igb lab: after `modprobe igb` the daemon's
RTM_SETLINK named the PF by the name it had read a moment before and got ENODEV.

The rule: every netlink request names the netdev by the ifindex read through the device's own
sysfs directory at the moment of the request (`host.observe.device_netdevs`); a rename keeps the
ifindex, and a new netdev never gets an old one. Walked here over every netlink write the executor
makes (VF settings, the PF's MTU, a VF's MTU, InfiniBand VF GUIDs) and the observation's read, for
a rename just before the request, and for the old name taken by another PF's netdev meanwhile.
"""

from __future__ import annotations

import errno
import textwrap

import pytest

from sriov_node.config import load_config
from sriov_node.engine.reconcile import reconcile
from sriov_node.host.links import NetlinkLinks
from sriov_node.host.paths import PCI_DEVICES
from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, PF1, open_host

SETTINGS = f"""
[[pf]]
pci = "{PF0}"
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  vlan = 100
  trust = true
[[pf]]
pci = "{PF1}"
num_vfs = 2
"""
PF_MTU = f"""
[[pf]]
pci = "{PF0}"
num_vfs = 2
mtu = 9000
[[pf]]
pci = "{PF1}"
num_vfs = 2
"""
VF_MTU = f"""
[[pf]]
pci = "{PF0}"
num_vfs = 2
  [[pf.vfs]]
  range = "0"
  mtu = 9000
[[pf]]
pci = "{PF1}"
num_vfs = 2
"""
IB_PF0, IB_PF1 = "0000:20:00.0", "0000:20:00.1"
GUIDS = f"""
[[pf]]
pci = "{IB_PF0}"
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  guid = "auto"
[[pf]]
pci = "{IB_PF1}"
num_vfs = 2
"""


def _config(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return load_config(str(path))


def _netdev(host, dev):
    return sorted(host.sysfs.listdir(PCI_DEVICES, dev, "net"))[0]


def _rename_before(host, method, target, *, taken_by=None):
    """Wrap host.links.<method>: just before its first call, udev renames `target()`'s netdev (a
    function of the host: the netdev is there only once the run made it); with `taken_by`, that
    PF's netdev then takes the freed name, as the kernel's next ethN does."""
    real = getattr(host.links, method)
    done = []

    def wrapped(*args, **kwargs):
        if not done:
            done.append(True)
            sim = SimKernel(host.root)
            dev = target(host)
            old = _netdev(host, dev)
            sim.rename_netdev(old, "renamed0")
            if taken_by is not None:
                sim.rename_netdev(_netdev(host, taken_by), old)
            done.append(old)
        return real(*args, **kwargs)

    setattr(host.links, method, wrapped)
    return done


def _pf0(host):
    return PF0


def _vf0(host):
    return host.sysfs.vf_address(PF0, 0)


CASES = {
    # config, host's NICs, the netlink write, whose netdev udev renames
    "vf-settings": (SETTINGS, ("x710", 2, None), "set_vf_links", _pf0),
    "pf-mtu": (PF_MTU, ("x710", 2, None), "set_mtu", _pf0),
    "vf-mtu": (VF_MTU, ("x710", 2, None), "set_mtu", _vf0),
    "ib-guids": (GUIDS, ("cx6-ib", 2, None), "set_vf_links", _pf0),
}


@pytest.mark.parametrize("taken", [False, True], ids=["renamed", "renamed-and-name-taken"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_rename_just_before_a_netlink_write_changes_nothing_for_the_run(make_host, tmp_path, case, taken):
    text, nic, method, target = CASES[case]
    host = make_host(nic)
    desired = _config(tmp_path, text)
    pf1_mtu = host.sysfs.read_int(PCI_DEVICES, PF1, "net", _netdev(host, PF1), "mtu")
    done = _rename_before(host, method, target, taken_by=PF1 if taken else None)
    report = reconcile(host, desired)
    assert len(done) == 2, "the rename never ran: the case does not reach its netlink write"
    assert report.exit_code == 0, [o.error for o in report.outcomes]
    again = reconcile(open_host(host.root), desired)
    assert again.exit_code == 0 and sum(o.writes for o in again.outcomes) == 0, [o.actions for o in again.outcomes]
    now = open_host(host.root)
    if case == "vf-settings":
        links = now.links.vf_links("renamed0" if target is _pf0 else _netdev(now, PF0))
        assert [(v.vlan, v.trust) for _, v in sorted(links.items())] == [(100, True)] * 2
    if case == "pf-mtu":
        assert now.sysfs.read_int(PCI_DEVICES, PF0, "net", "renamed0", "mtu") == 9000
    if case == "vf-mtu":
        assert now.sysfs.read_int(PCI_DEVICES, _vf0(now), "net", "renamed0", "mtu") == 9000
    if case == "ib-guids":
        links = now.links.vf_links("renamed0")
        assert all(v.node_guid not in (None, "00:00:00:00:00:00:00:00") for v in links.values()), links
    if taken:  # the other PF, which took the old name, got nothing of PF0's
        other = now.links.vf_links(done[1])
        assert len(other) == 2 and all((v.vlan, v.trust) == (0, False) for v in other.values()), other
        assert all(v.node_guid in (None, "00:00:00:00:00:00:00:00") for v in other.values()), other
        assert now.sysfs.read_int(PCI_DEVICES, PF1, "net", done[1], "mtu") == pf1_mtu
        vf = now.sysfs.vf_address(PF1, 0)
        assert now.sysfs.read_int(PCI_DEVICES, vf, "net", _netdev(now, vf), "mtu") == pf1_mtu


def test_a_rename_between_the_observations_reads_is_read_again(make_host):
    """The observation lists the PF's netdev, then reads its ifindex: a rename in between is seen
    (the name is gone from the device's directory) and the listing read again."""
    from sriov_node.host.observe import device_netdevs, observe_pf

    host = make_host(("x710", 2, None))
    real = host.sysfs.read_int
    renamed = []

    def read_int(base, *parts):
        if parts[-1] == "ifindex" and not renamed:
            renamed.append(parts[-2])
            SimKernel(host.root).rename_netdev(parts[-2], "renamed0")
        return real(base, *parts)

    host.sysfs.read_int = read_int
    names, ifindex = device_netdevs(host, PCI_DEVICES, PF0)
    assert renamed == ["ens1f0"] and names == ("renamed0",) and ifindex is not None
    pf = observe_pf(open_host(host.root), PF0)
    assert pf.netdevs == ("renamed0",) and pf.links_error is None


def test_a_captured_tree_without_ifindex_files_names_netdevs_by_name(make_host):
    """A capture of a real machine may lack `ifindex` files: the netdev is then named, not indexed."""
    import os

    from sriov_node.host.observe import device_netdevs

    host = make_host(("x710", 2, None))
    path = os.path.join(host.root, "sys/class/net/ens1f0/ifindex")
    os.chmod(path, 0o644)
    os.unlink(path)
    assert device_netdevs(open_host(host.root), PCI_DEVICES, PF0) == (("ens1f0",), None)


# ---------------------------------------------------------------- the requests themselves


class IndexRoute:
    """pyroute2's IPRoute as NetlinkLinks uses it, answering by ifindex: 7 is the only netdev."""

    def __init__(self):
        self.sent = []
        self.asked = []

    def nlm_request_batch(self, msgs):
        from pyroute2.netlink.exceptions import NetlinkError

        for msg in msgs:
            msg.encode()
            self.sent.append(msg)
            if msg["index"] != 7:
                raise NetlinkError(errno.ENODEV, "No such device")
        return iter(())

    def link(self, command, **kwargs):
        from pyroute2.netlink.exceptions import NetlinkError

        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        from tests.netlink_reference import newlink

        self.asked.append((command, kwargs))
        if kwargs.get("index") != 7 or "ifname" in kwargs:
            raise NetlinkError(errno.ENODEV, "No such device")
        return MarshalRtnl().parse(newlink({}, count=0)) if command == "get" else []


def _links(route):
    links = NetlinkLinks()
    links._ipr = route
    return links


def test_a_request_by_ifindex_carries_the_index_and_never_a_name():
    """With an index and IFLA_IFNAME both, RTM_SETLINK would rename the netdev (do_setlink): never both."""
    route = IndexRoute()
    _links(route).set_vf_links("eth1", [(0, {"trust": True})], ifindex=7)
    (msg,) = route.sent
    assert msg["index"] == 7 and msg.get_attr("IFLA_IFNAME") is None and msg.get_attr("IFLA_VFINFO_LIST")
    _links(route).set_mtu("eth1", 9000, ifindex=7)
    assert _links(route).vf_links("eth1", ifindex=7) == {}
    assert [(command, kwargs.get("index"), "ifname" in kwargs) for command, kwargs in route.asked] == [
        ("set", 7, False), ("get", 7, False)]


@pytest.mark.parametrize("ask", ["set_vf_links", "set_mtu", "vf_links"])
def test_a_netdev_gone_by_its_index_says_so_with_its_name(ask):
    route = IndexRoute()
    call = {"set_vf_links": lambda links: links.set_vf_links("eth1", [(0, {"trust": True})], ifindex=9),
            "set_mtu": lambda links: links.set_mtu("eth1", 9000, ifindex=9),
            "vf_links": lambda links: links.vf_links("eth1", ifindex=9)}[ask]
    with pytest.raises(OSError) as exc:
        call(_links(route))
    assert exc.value.errno == errno.ENODEV
    assert "'eth1' (ifindex 9) is gone" in str(exc.value), exc.value
