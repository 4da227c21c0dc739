"""Uevent sources and routing: which PF an event may have moved, and which events are only echoes."""

from __future__ import annotations

import ast
import os
import select
import shutil
import subprocess
import sys

import pytest

from tests.helpers import open_host, sim_uevents
from sriov_node.service.uevents import RECEIVE_BUFFER, LinkSource, ListenerSource, Uevent, route, touched_pf
from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0

BRIDGE = "/devices/pci0000:00/0000:00:03.0"


def ev(action, subsystem, devpath, seq=None):
    return Uevent(action, subsystem, devpath, seq)


def test_each_kind_of_event_names_its_pf(make_host):
    host = make_host()
    host.sysfs.set_num_vfs(PF0, 2)
    vf = host.sysfs.vf_address(PF0, 0)
    assert touched_pf(ev("unbind", "pci", f"{BRIDGE}/{PF0}"), host, {}) == PF0  # PF driver unbound
    assert touched_pf(ev("add", "net", f"{BRIDGE}/{PF0}/net/ens1f0"), host, {}) == PF0  # PF netdev appeared
    assert touched_pf(ev("bind", "pci", f"{BRIDGE}/{vf}"), host, {}) == PF0  # a VF rebound
    host.sysfs.set_num_vfs(PF0, 0)
    gone = ev("remove", "pci", f"{BRIDGE}/{vf}")
    assert touched_pf(gone, host, {}) is None  # the VF is gone: only the last observation knows its PF
    assert touched_pf(gone, host, {vf: PF0}) == PF0
    assert touched_pf(ev("change", "net", f"{BRIDGE}/{PF0}/net/ens1f0"), host, {}) is None
    assert touched_pf(ev("add", "net", "/devices/virtual/net/veth0"), host, {}) is None
    assert touched_pf(ev("bind", "pci", "/devices/pci0000:00/0000:00:1c.0/0000:02:00.0"), host, {}) is None  # eno1


def test_events_the_last_read_covers_are_dropped(make_host):
    host = make_host()
    dropped = []
    events = [ev("bind", "pci", f"{BRIDGE}/{PF0}", 10), ev("unbind", "pci", f"{BRIDGE}/{PF0}", 12)]
    assert route(events[:1], host, {}, {PF0: 11}, dropped.append) == set() and len(dropped) == 1
    assert route(events, host, {}, {PF0: 11}) == {PF0}  # 12 came after the read: look again


def test_the_simulated_kernel_announces_what_it_does(make_host):
    host = make_host()
    open_host(host.root).sysfs.set_num_vfs(PF0, 1)
    events = sim_uevents(host)
    assert [(e["ACTION"], e["SUBSYSTEM"]) for e in events] == [
        ("add", "pci"), ("change", "pci"), ("add", "net"), ("bind", "pci"), ("change", "pci")]
    assert events[3]["DRIVER"] == "iavf" and events[-1]["PCI_SLOT_NAME"] == PF0
    seqs = [int(e["SEQNUM"]) for e in events]
    assert seqs == sorted(seqs) and open_host(host.root).sysfs.uevent_seqnum() == seqs[-1]


def _sent(host, after=0):
    """The SEQNUMs of the uevents the simulated kernel has sent, from the `after`-th on."""
    return [int(e["SEQNUM"]) for e in sim_uevents(host)][after:]


def test_a_burst_its_listener_reads_late_waits_for_it_whole(make_host):
    """Every uevent sent once the listener is bound waits for it, however many come before it reads
    (the kernel's netlink socket holds them up to its receive buffer), and none from before."""
    host = make_host()
    h = open_host(host.root)
    h.sysfs.set_num_vfs(PF0, 2)  # before the listener: not heard
    before = len(_sent(host))
    src = ListenerSource(open_host(host.root))
    try:
        h.sysfs.set_num_vfs(PF0, 0)
        h.sysfs.set_num_vfs(PF0, 16)  # a burst of dozens of events, nobody reading
        sent = _sent(host, before)
        assert len(sent) > 40
        assert select.select([src], [], [], 0)[0]
        assert [e.seqnum for e in src.drain()] == sent and src.lost == 0
        assert list(src.drain()) == []  # each is heard once
        h.sysfs.set_num_vfs(PF0, 0)
        assert select.select([src], [], [], 0)[0]  # a later write wakes the listener again
        assert [e.seqnum for e in src.drain()] == _sent(host, before + len(sent))
    finally:
        src.close()


def test_a_burst_beyond_the_listeners_buffer_is_lost_and_said_to_be(make_host):
    """What a full receive buffer cannot hold is lost, and the next read says so (ENOBUFS) once:
    the source counts it in `lost` and goes on with the events it kept, the first ones."""
    host = make_host()
    h = open_host(host.root)
    src = ListenerSource(open_host(host.root))
    try:
        SimKernel(host.root).uevent_buffer(1000)
        before = len(_sent(host))
        h.sysfs.set_num_vfs(PF0, 8)
        sent = _sent(host, before)
        got = [e.seqnum for e in src.drain()]
        assert 0 < len(got) < len(sent) and got == sent[:len(got)] and src.lost == 1
        src.lost = 0
        h.sysfs.unbind(h.sysfs.vf_address(PF0, 0), "iavf")  # fits: heard, nothing lost
        assert [e.seqnum for e in src.drain()] == _sent(host, before + len(sent)) and src.lost == 0
    finally:
        src.close()


NEEDS_NETNS = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"),
                                 reason="needs root, unshare and ip")
# What a script run by _in_netns has: hear(src, name) reads the source until netdev `name` is added
HEAR = (
    "import os, select, subprocess\n"
    "def hear(src, name):\n"
    "    seen = []\n"
    "    while select.select([src], [], [], 5)[0]:\n"
    "        seen += [(e.action, e.subsystem, e.devpath, e.seqnum) for e in src.drain()]\n"
    "        if any(s[2].endswith('/net/' + name) for s in seen): break\n"
    "    return seen\n"
)


def _in_netns(script: str) -> str:
    """`script`'s output, run in a throw-away network namespace: the veth pairs it adds there send
    real uevents to its sockets, and vanish with it."""
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", HEAR + script], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@NEEDS_NETNS
def test_the_kernel_source_receives_a_real_uevent():
    """No udevd here: pyudev's kernel source must hear the kernel itself, with udevd's buffer size."""
    out = _in_netns(
        "import socket\n"
        "from sriov_node.service.uevents import PyudevSource\n"
        "src = PyudevSource('kernel')\n"
        "print(socket.socket(fileno=os.dup(src.fileno())).getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))\n"
        "subprocess.run(['ip', 'link', 'add', 'sn0', 'type', 'veth', 'peer', 'name', 'sn1'], check=True)\n"
        "print(hear(src, 'sn0'))\n"
    )
    rcvbuf, printed = out.split("\n", 1)
    assert int(rcvbuf) >= RECEIVE_BUFFER  # udevd's size, not the kernel's default of a few hundred KiB
    seen = ast.literal_eval(printed)  # a list of tuples, printed above
    adds = [s for s in seen if s[0] == "add" and s[1] == "net" and s[2].endswith("/net/sn0")]
    assert adds and isinstance(adds[0][3], int)


@NEEDS_NETNS
def test_the_kernel_sources_overrun_is_counted_as_lost_and_reading_goes_on():
    """The real kernel's overrun: a burst larger than the socket's receive buffer (made tiny here)
    leaves ENOBUFS pending, which pyudev's poll reports only as "Error while polling fd". The source
    counts it as lost, keeps the events the buffer held, and hears the next ones."""
    out = _in_netns(
        "from sriov_node.service.uevents import RECEIVE_BUFFER, PyudevSource\n"
        "src = PyudevSource('kernel')\n"
        "src.monitor.set_receive_buffer_size(4096)\n"
        "for i in range(12):\n"
        "    subprocess.run(['ip', 'link', 'add', f'sa{i}', 'type', 'veth', 'peer', 'name', f'sb{i}'], check=True)\n"
        "kept = len(list(src.drain()))\n"
        "lost, src.lost = src.lost, 0\n"
        "src.monitor.set_receive_buffer_size(RECEIVE_BUFFER)\n"
        "subprocess.run(['ip', 'link', 'add', 'sz0', 'type', 'veth', 'peer', 'name', 'sz1'], check=True)\n"
        "heard = any(s[2].endswith('/net/sz0') for s in hear(src, 'sz0'))\n"
        "print(kept, lost, heard, src.lost)\n"
    )
    kept, lost, heard, lost_after = out.split()
    assert int(kept) > 0 and int(lost) >= 1  # the first events kept, the overrun counted
    assert heard == "True" and lost_after == "0"  # and the source reads on


@NEEDS_NETNS
def test_the_link_listener_hears_the_kernels_rtm_newlink_and_says_when_it_overran():
    """A change of a netdev's state that sends no uevent (an MTU here; a VF setting on a PF's netdev
    alike) is heard from rtnetlink's link group, by name. A burst beyond the socket's buffer: what it
    kept is read, then ENOBUFS once, and the listener reads on."""
    out = _in_netns(
        "import errno, socket\n"
        "from sriov_node.host.links import NetlinkLinks\n"
        "subprocess.run(['ip', 'link', 'add', 'sn0', 'type', 'veth', 'peer', 'name', 'sn1'], check=True)\n"
        "listener = NetlinkLinks().listen()\n"
        "subprocess.run(['ip', 'link', 'set', 'sn0', 'mtu', '1400'], check=True)\n"
        "select.select([listener], [], [], 5)\n"
        "print([name for _, name in listener.receive()])\n"
        "listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)\n"
        "for mtu in range(1300, 1340):\n"
        "    subprocess.run(['ip', 'link', 'set', 'sn0', 'mtu', str(mtu)], check=True)\n"
        "kept, lost = 0, 0\n"
        "while True:\n"
        "    try:\n"
        "        got = listener.receive()\n"
        "    except OSError as exc:\n"
        "        assert exc.errno == errno.ENOBUFS, exc\n"
        "        lost += 1\n"
        "        continue\n"
        "    if not got:\n"
        "        break\n"
        "    kept += len(got)\n"
        "listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)\n"
        "subprocess.run(['ip', 'link', 'set', 'sn1', 'mtu', '1280'], check=True)\n"
        "select.select([listener], [], [], 5)\n"
        "print((kept, lost, [name for _, name in listener.receive()]))\n")
    first, second = out.splitlines()
    assert ast.literal_eval(first) == ["sn0"]
    kept, lost, after = ast.literal_eval(second)
    assert kept > 0 and lost == 1  # the first notifications kept, the overrun said once
    assert after == ["sn1"]  # and the listener reads on


def test_the_simulated_kernel_tells_the_link_group_of_each_netlink_change_that_applied(make_host):
    """As do_setlink: one RTM_NEWLINK for a request that applied a VF setting (even one that failed
    on a later VF, keeping what it applied), one for an MTU; none for a request that applied
    nothing. Only a PF's own netdev names a PF."""
    host = make_host(("e810", 1, None))
    host.sysfs.set_num_vfs(PF0, 2)
    src = LinkSource(host)
    try:
        assert list(src.drain()) == []
        host.links.set_vf_links("ens1f0", [(0, {"trust": True}), (1, {"vlan": (5, 0, "802.1Q")})])
        host.links.set_mtu("ens1f0", 9000)
        with pytest.raises(OSError):
            host.links.set_vf_links("ens1f0", [(1, {"trust": True}), (7, {"trust": True})])  # VF 7: EINVAL
        with pytest.raises(OSError):
            host.links.set_vf_links("ens1f0", [(7, {"trust": True})])  # applies nothing
        events = list(src.drain())
        assert [(e.action, e.device) for e in events] == [("link", PF0)] * 3
        assert {touched_pf(e, host, {}) for e in events} == {PF0}
        vf_netdev = host.sysfs.listdir("sys/bus/pci/devices", host.sysfs.vf_address(PF0, 0), "net")[0]
        host.links.set_mtu(vf_netdev, 1400)
        (vf_event,) = src.drain()
        assert vf_event.device == host.sysfs.vf_address(PF0, 0) and touched_pf(vf_event, host, {}) is None
        SimKernel(host.root).uevent_buffer(200)  # two notifications or so
        for mtu in range(1500, 1520):
            host.links.set_mtu("ens1f0", mtu)
        kept = list(src.drain())
        assert 0 < len(kept) < 20 and src.lost == 1  # the source counts the overrun, for the daemon
        src.lost = 0
        SimKernel(host.root).uevent_buffer(1 << 20)
        host.links.set_mtu("ens1f0", 1600)
        assert [e.device for e in src.drain()] == [PF0] and src.lost == 0
    finally:
        src.close()


def test_a_netdevsim_driver_reload_names_its_device(make_host):
    # netdevsim (the kernel's simulated NIC) is a bus of its own: its unbind/bind is a PF driver reload
    host = make_host()
    os.makedirs(os.path.join(host.root, "sys/bus/netdevsim/devices/netdevsim10"))
    open(os.path.join(host.root, "sys/bus/netdevsim/devices/netdevsim10/sriov_numvfs"), "w").write("0\n")
    path = "/devices/netdevsim10"
    assert touched_pf(ev("bind", "netdevsim", path), host, {}) == "netdevsim10"
    assert touched_pf(ev("unbind", "netdevsim", path), host, {}) == "netdevsim10"
    assert touched_pf(ev("add", "net", f"{path}/net/eni10np1"), host, {}) == "netdevsim10"
    assert touched_pf(ev("change", "netdevsim", path), host, {}) is None
    assert touched_pf(ev("bind", "platform", "/devices/platform/serial8250"), host, {}) is None


def test_the_generations_watch_wakes_on_a_record_and_survives_its_directory_being_removed(tmp_path):
    import select

    from sriov_node.atomic import write_atomic
    from sriov_node.service.uevents import IN_MOVED_TO, DirectoryWatch

    folder = tmp_path / "generations"
    watch = DirectoryWatch(str(folder))  # created when missing
    try:
        assert folder.is_dir() and select.select([watch], [], [], 0)[0] == []  # idle: nothing to read
        write_atomic(str(folder / "00000001.json"), b"{}\n")  # written beside, renamed in
        assert select.select([watch], [], [], 10)[0] == [watch]
        assert (IN_MOVED_TO, "00000001.json") in [(m & IN_MOVED_TO, n) for m, n in watch.drain()]
        shutil.rmtree(folder)  # removed by hand: the watch is re-armed on a new directory
        assert select.select([watch], [], [], 10)[0] == [watch]
        watch.drain()
        write_atomic(str(folder / "00000002.json"), b"{}\n")
        assert select.select([watch], [], [], 10)[0] == [watch]
        assert "00000002.json" in [n for _, n in watch.drain()]
    finally:
        watch.close()
