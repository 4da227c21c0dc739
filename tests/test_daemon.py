"""`sriov-node daemon` on the simulated kernel: uevents in, per-PF reconciles out, sd_notify to a socket.

The daemon runs as a user's systemd would run it: a process with NOTIFY_SOCKET pointing at a
datagram socket this test binds. The simulated kernel sends it uevents as a real one would
(a PF driver unbind disables the VFs; a bind brings the PF back with none).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Iterator, List

import pytest

from tests.helpers import open_host
from sriov_node.sim.kernel import SimKernel
from tests.helpers import CLI, run_cli, sim_writes

from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)
CONFIG = f"""
[[pf]]
pci = "{PF0}"
num_vfs = 4
  [[pf.vfs]]
  range = "0-1"
  driver = "vfio-pci"
  [[pf.vfs]]
  range = "2-3"
  trust = true
[[pf]]
pci = "{PF1}"
num_vfs = 2
"""


class DaemonProcess:
    def __init__(self, root: str, config: str, tmp, *extra: str):
        self.notify_path = str(tmp / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.notify_path)
        self.sock.settimeout(0.1)
        self.messages: List[str] = []
        self.log: List[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SRIOV_NODE_", "JOURNAL_STREAM", "INVOCATION_ID"))}
        env["NOTIFY_SOCKET"] = self.notify_path
        self.proc = subprocess.Popen([CLI, "--root", root, "--config", config, "daemon", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._threads = [threading.Thread(target=self._read_notify, daemon=True),
                         threading.Thread(target=self._read_log, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_notify(self) -> None:
        while self.proc.poll() is None or self._pending():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def _pending(self) -> bool:
        try:
            self.sock.setblocking(False)
            data = self.sock.recv(4096)
            self.messages.append(data.decode())
            return True
        except (BlockingIOError, OSError):
            return False
        finally:
            try:
                self.sock.settimeout(0.1)
            except OSError:
                pass

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_for(self, predicate, timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} waiting for {what}\n" + "\n".join(self.log))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\nnotify: {self.messages}\n" + "\n".join(self.log))
            time.sleep(0.02)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The daemon stopped (SIGSTOP) while the block runs: what the block does to the host waits
        for it as one backlog of uevents, however loaded the machine is."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while _state(self.proc.pid) != "T":  # stopped, not merely signalled
            assert time.monotonic() < deadline, f"daemon not stopped: {_state(self.proc.pid)}"
            time.sleep(0.005)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def notified(self, text: str) -> bool:
        return any(text in m for m in self.messages)

    def runs(self) -> int:
        return sum(1 for line in self.log if re.search(r"run \d+:", line))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        finally:
            for t in self._threads:
                t.join(timeout=5)
            self.sock.close()
        return code


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def daemon(make_host, write_config, tmp_path):
    started = []

    def start(config_text: str = CONFIG, *extra: str, host=None):
        host = host or make_host(vfio_loaded=True)
        path = write_config(config_text)
        d = DaemonProcess(host.root, path, tmp_path, *extra)
        d.host, d.path = host, path
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def test_ready_after_the_first_convergence(daemon):
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    h = open_host(d.host.root)
    assert h.sysfs.num_vfs(PF0) == 4 and h.sysfs.num_vfs(PF1) == 2  # converged before READY=1
    ready = next(m for m in d.messages if "READY=1" in m)
    assert "STATUS=2 of 2 PF(s) converged" in ready
    assert d.stop() == 0
    assert d.notified("STOPPING=1")


def test_a_pf_driver_reload_is_repaired(daemon):
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    h = open_host(d.host.root)
    before = d.runs()
    with d.frozen():  # rmmod; modprobe as one burst, however long this process takes between them
        h.sysfs.unbind(PF0, "i40e")  # rmmod: the PF driver disables its VFs on the way out
        assert h.sysfs.num_vfs(PF0) == 0
        h.sysfs.drivers_probe(PF0)  # modprobe: the PF is back, with no VFs
    d.wait_for(lambda: open_host(d.host.root).sysfs.num_vfs(PF0) == 4 and
               [h.sysfs.device_driver(h.sysfs.vf_address(PF0, i)) for i in range(4)] == ["vfio-pci"] * 2 + ["iavf"] * 2,
               what="VFs restored")
    assert open_host(d.host.root).links.vf_links("ens1f0")[3].trust is True  # settings back too
    d.wait_for(lambda: d.runs() > before, what="a run")
    assert any(f"only {PF0}" in line for line in d.log)  # only the PF the events touched
    # the PF's bind is the last event of a driver reload: the run starts then, not after a quiet period
    d.wait_for(lambda: any(f"only {PF0} (" in line and "ended by a PF's bind or change" in line for line in d.log),
               what="the run started by the PF's bind")


def test_lost_uevents_make_the_daemon_converge_every_pf(daemon):
    """The kernel drops the uevents its socket's receive buffer cannot hold and says so (ENOBUFS):
    what the lost ones said is unknown, so every PF is converged again, not only those the kept
    ones name."""
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    h = open_host(d.host.root)
    with d.frozen():
        SimKernel(d.host.root).uevent_buffer(600)  # three events or so
        h.sysfs.unbind(PF0, "i40e")  # the kept events: the start of this one's burst
        h.sysfs.drivers_probe(PF0)
        h.sysfs.set_num_vfs(PF1, 0)  # lost: nothing that is kept names PF1
    d.wait_for(lambda: any("uevents were lost" in line for line in d.log), what="the loss said")
    d.wait_for(lambda: h.sysfs.num_vfs(PF0) == 4 and h.sysfs.num_vfs(PF1) == 2, what="both PFs restored")
    lost = next(i for i, line in enumerate(d.log) if "uevents were lost" in line)
    # the run's line is logged once it has read the PFs back, after their writes
    d.wait_for(lambda: any(re.search(r"run \d+: every PF:", line) for line in d.log[lost:]), what="a run of every PF")
    assert d.proc.poll() is None


def test_a_ready_daemon_has_loaded_what_its_first_reaction_needs(daemon, make_host, write_config, monkeypatch):
    """The modules a run that changes something needs (planner, executor) are loaded once the daemon
    is ready, not in its first reaction to a PF driver reload: even when its start found nothing to do."""
    host = make_host(vfio_loaded=True)
    assert run_cli("apply", root=host.root, config=write_config(CONFIG)).returncode == 0  # the start changes nothing
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    d = daemon(host=host)
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    loaded = lambda: {line.rsplit("|", 1)[-1].strip() for line in d.log if line.startswith("import time:")}
    d.wait_for(lambda: {"sriov_node.engine.plan", "sriov_node.engine.execute"} <= loaded(),
               what="the planner and the executor loaded")
    assert d.runs() == 1 and any("nothing to do" in line or "unchanged" in line or "converged" in line
                                 for line in d.log if re.search(r"run 1:", line)), d.log[-20:]


def test_a_root_prefix_longer_than_a_socket_address_still_hears_its_uevents(daemon, tmp_path):
    """A socket address holds 107 bytes; a root prefix deep in a tree (a test worker's) passes them."""
    from sriov_node.sim.build import create_host

    root = tmp_path / ("deep-" + "d" * 60) / ("er-" + "e" * 60) / "host"
    create_host(str(root), (("x710", 2, None),), vfio_loaded=True)
    assert len(str(root / "run/sriov-node-sim/uevents.sock")) > 108
    d = daemon(host=open_host(str(root)))
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    assert not any("cannot listen to uevents" in line for line in d.log), d.log
    h = open_host(str(root))
    h.sysfs.unbind(PF0, "i40e")
    h.sysfs.drivers_probe(PF0)
    d.wait_for(lambda: open_host(str(root)).sysfs.num_vfs(PF0) == 4, what="the repair the uevents start")


def test_a_pf_without_its_driver_waits_for_the_bind_event_not_a_back_off(daemon):
    # A firmware update keeps the PF driver away for seconds: the runs in between fail (no
    # driver), and the bind that ends it must be answered at once, not after a grown back-off.
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    h = open_host(d.host.root)
    h.sysfs.unbind(PF0, "i40e")
    d.wait_for(lambda: any("no driver is bound to the PF" in line for line in d.log), what="the failed run")
    d.wait_for(lambda: any("waiting for its driver to be bound" in line for line in d.log),
               what="the daemon waiting for the bind event")
    runs = d.runs()
    h.sysfs.drivers_probe(PF0)
    d.wait_for(lambda: open_host(d.host.root).sysfs.num_vfs(PF0) == 4, what="VFs restored")
    # the bind's own event started the repair (not a timer): the next run is PF0's, its burst ended by the bind
    d.wait_for(lambda: d.runs() > runs, what="the repair run")
    assert f"only {PF0} (" in run_lines(d)[runs] and "ended by a PF's bind or change" in run_lines(d)[runs], d.log
    assert not any("next attempt in" in line for line in d.log), d.log


def test_a_burst_of_events_is_one_run_and_our_own_writes_do_not_start_another(daemon):
    d = daemon(CONFIG.replace("num_vfs = 4", "num_vfs = 32"))
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    nudge_pf1(d)
    assert len(run_lines(d)) == 2, d.log  # the first run's hundreds of uevents (our own) started nothing
    settled = d.runs()
    h = open_host(d.host.root)
    with d.frozen():  # one burst, however long this process takes between the two writes
        h.sysfs.unbind(PF0, "i40e")  # 32 VFs removed: ~100 uevents
        h.sysfs.drivers_probe(PF0)
    d.wait_for(lambda: d.runs() > settled, what="the repair run")
    d.wait_for(lambda: open_host(d.host.root).sysfs.num_vfs(PF0) == 32, what="PF0 repaired")
    nudge_pf1(d)
    assert len(run_lines(d)) == settled + 2, d.log  # one run for the whole burst, none for its own echoes


MTU_CONFIG = CONFIG.replace(f'pci = "{PF0}"\nnum_vfs = 4\n', f'pci = "{PF0}"\nnum_vfs = 4\nmtu = 9000\n')
# changes by hand that send no uevent, only rtnetlink's RTM_NEWLINK: (what, how, read back as wanted)
BY_HAND = {
    "vf trust": (lambda h: h.links.set_vf_links("ens1f0", [(2, {"trust": False})]),
                 lambda h: h.links.vf_links("ens1f0")[2].trust is True),
    "vf trust, two VFs at once": (lambda h: h.links.set_vf_links("ens1f0", [(2, {"trust": False}), (3, {"trust": False})]),
                                  lambda h: [h.links.vf_links("ens1f0")[i].trust for i in (2, 3)] == [True, True]),
    "pf mtu": (lambda h: h.links.set_mtu("ens1f0", 1500), lambda h: h.sysfs.read_int("sys/class/net", "ens1f0", "mtu") == 9000),
}


@pytest.mark.parametrize("change", sorted(BY_HAND))
def test_a_netlink_change_by_hand_is_put_back_and_the_daemons_own_start_no_run(daemon, change):
    """`ip link set PF vf N trust off`, or a PF's MTU, by hand: no uevent, only an RTM_NEWLINK on
    rtnetlink's link group. The daemon compares the PF with what its last run read back, finds it
    moved, and converges it: one run. Its own settings send the same RTM_NEWLINK; they find the PF
    as the run left it, and start nothing."""
    d = daemon(MTU_CONFIG)
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    h = open_host(d.host.root)
    how, wanted = BY_HAND[change]
    assert wanted(h)
    nudge_pf1(d)  # the first run's echoes are behind us
    settled = d.runs()
    how(h)
    d.wait_for(lambda: wanted(open_host(d.host.root)), what="put back")
    d.wait_for(lambda: d.runs() > settled, what="the run")
    assert f"only {PF0}" in run_lines(d)[settled], d.log
    nudge_pf1(d)
    assert len(run_lines(d)) == settled + 2, d.log  # the repair and the nudge: none for the repair's echo


def test_a_link_change_that_moves_nothing_the_daemon_manages_starts_no_run(daemon):
    """An RTM_NEWLINK for a PF whose VF settings and MTU are as the last run read them (its link
    went down and up; a setting this config does not manage, read back as it was) is no reason to
    run: the comparison with that read says so, without a run."""
    d = daemon(MTU_CONFIG)
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    nudge_pf1(d)
    settled = d.runs()
    from sriov_node.sim.host import _net

    net = _net(SimKernel(d.host.root))
    net.set_link_up("ens1f0", False)
    net.set_link_up("ens1f0", True)
    time.sleep(0.5)  # long past the quiet period
    nudge_pf1(d)
    assert len(run_lines(d)) == settled + 1, d.log  # the nudge's run alone


def run_lines(d) -> List[str]:
    return [line for line in d.log if re.search(r"run \d+:", line)]


def nudge_pf1(d) -> None:
    """An event-based "nothing else is coming": one of PF1's VFs loses its driver, and the daemon's
    next run must be PF1's alone. A run that earlier events (or their echoes) would still start
    comes before it: those events were sent first. Returns once PF1's run is logged."""
    h = open_host(d.host.root)
    before = d.runs()
    vf = h.sysfs.vf_address(PF1, 0)
    h.sysfs.unbind(vf, h.sysfs.device_driver(vf))
    d.wait_for(lambda: any(f"only {PF1}" in line for line in run_lines(d)[before:]), what="PF1's run")
    assert f"only {PF1}" in run_lines(d)[before], d.log


def test_a_manual_apply_is_not_fought(daemon):
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    runs = d.runs()
    result = run_cli("apply", root=d.host.root, config=d.path)
    assert result.returncode == 0 and "write" not in result.stdout
    time.sleep(0.5)
    assert d.runs() == runs


def test_sighup_with_a_bad_config_keeps_the_old_one_and_a_good_one_applies(daemon, write_config):
    d = daemon()
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    with open(d.path, "w") as fh:
        fh.write('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = "many"\n')
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: d.notified("reload refused"), what="a refused reload")
    assert d.notified("RELOADING=1")
    assert any("pf[0].num_vfs" in line for line in d.log)
    h = open_host(d.host.root)
    h.sysfs.unbind(PF1, "i40e")  # the old config still rules: PF1 is repaired
    h.sysfs.drivers_probe(PF1)
    d.wait_for(lambda: open_host(d.host.root).sysfs.num_vfs(PF1) == 2, what="old config applied")
    with open(d.path, "w") as fh:
        fh.write(f'[[pf]]\npci = "{PF1}"\nnum_vfs = 3\n')
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: open_host(d.host.root).sysfs.num_vfs(PF1) == 3, what="new config applied")


def test_a_failing_pf_backs_off(daemon, make_host):
    host = make_host(vfio_loaded=True)
    SimKernel(host.root).add_fault("errno", device=PF1, attr="sriov_numvfs", errno="ENOMEM")
    d = daemon(host=host)
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    assert any("STATUS=1 of 2 PF(s) converged; not converged: 0000:20:00.1" in m for m in d.messages)
    d.wait_for(lambda: sum("next attempt in" in line for line in d.log) >= 2, timeout=15, what="two retries")
    delays = [float(m.group(1)) for line in d.log for m in [re.search(r"next attempt in (\d+) s", line)] if m]
    assert delays[:2] == [2.0, 4.0], d.log
    enomem = [r for p, _, r in sim_writes(host) if p.endswith(f"{PF1}/sriov_numvfs")]
    assert 2 <= len(enomem) <= 3  # retried on a back-off, not in a loop


def test_sigterm_stops_between_actions(daemon, make_host):
    host = make_host(vfio_loaded=True)
    SimKernel(host.root).add_fault("delay", attr="driver_override", seconds=0.3)
    d = daemon(host=host)
    d.wait_for(lambda: open_host(host.root).sysfs.num_vfs(PF0) == 4, what="the first run under way")
    d.proc.send_signal(signal.SIGTERM)
    assert d.stop() == 0
    assert d.notified("STOPPING=1") and not d.notified("READY=1")
    h = open_host(host.root)
    assert h.sysfs.autoprobe(PF0) is True  # the plan's clean-up ran
    assert SimKernel(host.root).consistency_problems() == []


def test_no_notify_runs_in_the_foreground(daemon):
    d = daemon(CONFIG, "--no-notify")
    d.wait_for(lambda: any("ready: 2 of 2 PF(s) converged" in line for line in d.log), what="ready")
    d.proc.send_signal(signal.SIGINT)
    assert d.stop() == 0
    assert d.messages == []  # nothing sent to NOTIFY_SOCKET


def test_the_daemon_refreshes_the_metrics_textfile(daemon):
    d = daemon('[metrics]\ntextfile = "/var/lib/node_exporter/textfile/sriov_node.prom"\n' + CONFIG)
    prom = os.path.join(d.host.root, "var/lib/node_exporter/textfile/sriov_node.prom")
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")
    assert any("metrics not written" in line for line in d.log)  # node_exporter's directory is not there yet
    os.makedirs(os.path.dirname(prom))
    d.proc.send_signal(signal.SIGHUP)  # the directory exists now: the next run writes the file
    d.wait_for(lambda: os.path.exists(prom) and "sriov_node_converged 1" in open(prom).read(), what="metrics")
    h = open_host(d.host.root)
    h.sysfs.unbind(PF1, "i40e")  # PF1 loses its driver: not converged, and the metrics say so
    d.wait_for(lambda: f'sriov_node_pf_converged{{block="pf[1]",name="ens1f1",pf="{PF1}"}} 0' in open(prom).read()
               or "sriov_node_converged 0" in open(prom).read(), what="metrics after a failure")


def test_without_a_textfile_the_metrics_go_where_debians_node_exporter_reads(daemon, make_host):
    """No [metrics] textfile: /var/lib/prometheus/node-exporter/sriov_node.prom (prometheus-node-exporter's
    --collector.textfile.directory on Debian and Ubuntu) when that directory exists; else no file, no complaint."""
    host = make_host(vfio_loaded=True)
    os.makedirs(os.path.join(host.root, "var/lib/prometheus/node-exporter"))
    d = daemon(CONFIG, host=host)
    prom = os.path.join(host.root, "var/lib/prometheus/node-exporter/sriov_node.prom")
    d.wait_for(lambda: os.path.exists(prom) and "sriov_node_converged 1" in open(prom).read(), what="metrics")


def test_without_a_textfile_nor_a_node_exporter_no_metrics_and_no_complaint(daemon):
    bare = daemon(CONFIG)
    bare.wait_for(lambda: bare.notified("READY=1"), what="READY=1")
    assert bare.stop() == 0
    assert not any("metrics" in line for line in bare.log), bare.log
    assert not os.path.exists(os.path.join(bare.host.root, "var/lib/prometheus"))


# ---------------------------------------------------------------------------- applied generations
#
# The daemon repairs toward the newest applied generation, never toward the file on disk until it
# is applied. Each test below ends the same way: a PF driver reload (the PF comes back bare) makes
# the daemon repair PF1, and the repair must land on the newest generation, then stay.

from sriov_node import generations  # noqa: E402

CONFIG3 = CONFIG.replace("num_vfs = 2", "num_vfs = 3")


def pf1_vfs(d) -> int:
    return open_host(d.host.root).sysfs.num_vfs(PF1)


def ready(d) -> None:
    d.wait_for(lambda: d.notified("READY=1"), what="READY=1")


def following(d, number: int) -> None:
    d.wait_for(lambda: any(f"following generation {number} " in line or f"recorded generation {number} " in line
                           for line in d.log), what=f"the daemon following generation {number}")


def repaired_to(d, vfs: int) -> None:
    """Take PF1's VFs away as a driver reload does; wait for the daemon's repair run; it must restore `vfs`."""
    before = d.runs()
    h = open_host(d.host.root)
    h.sysfs.unbind(PF1, "i40e")
    h.sysfs.drivers_probe(PF1)
    d.wait_for(lambda: d.runs() > before and pf1_vfs(d) != 0, what="the repair run")
    d.wait_for(lambda: pf1_vfs(d) == vfs, what=f"PF1 repaired to {vfs} VFs")
    settle(d)
    assert pf1_vfs(d) == vfs, d.log


def numvfs_writes(d) -> List[str]:
    return [value for path, value, _ in sim_writes(open_host(d.host.root)) if path.endswith(f"{PF1}/sriov_numvfs")]


def settle(d) -> None:
    """Until the simulated kernel's write log stops growing across one more daemon wake-up: a
    SIGHUP-free way to know the daemon is idle (it logs every run; no new run, no new writes)."""
    h = open_host(d.host.root)
    last = None
    while True:
        now = (len(sim_writes(h)), d.runs())
        if now == last:
            return
        last = now
        d.wait_for(lambda: True, what="")  # the daemon still runs
        time.sleep(0.3)


def newest(d) -> generations.Generation:
    gen = generations.current(open_host(d.host.root))
    assert gen is not None
    return gen


def test_started_without_a_generation_the_daemon_uses_the_file_and_records_it(daemon):
    d = daemon()
    ready(d)
    gen = newest(d)
    assert (gen.number, gen.command, gen.outcome) == (1, "daemon-start", "converged")
    assert gen.config == open(d.path, "rb").read() and "STATUS=2 of 2 PF(s) converged (generation 1)" in "".join(d.messages)
    repaired_to(d, 2)


def test_a_set_while_the_daemon_runs_is_kept(daemon):
    d = daemon()
    ready(d)
    result = run_cli("set", PF1, "num_vfs=3", root=d.host.root, config=d.path)
    assert result.returncode == 0, result.stdout + result.stderr
    gen = newest(d)
    assert gen.command == "set" and pf1_vfs(d) == 3
    following(d, gen.number)
    repaired_to(d, 3)
    assert newest(d).number == gen.number  # the daemon's repairs are no new generations


def test_a_hand_edit_is_not_applied_until_apply(daemon):
    d = daemon()
    ready(d)
    with open(d.path, "w") as fh:
        fh.write(CONFIG3)
    repaired_to(d, 2)  # the edited file is not desired state yet
    assert newest(d).number == 1
    result = run_cli("apply", root=d.host.root, config=d.path)
    assert result.returncode == 0, result.stdout + result.stderr
    gen = newest(d)
    assert gen.command == "apply" and pf1_vfs(d) == 3
    written = numvfs_writes(d)
    following(d, gen.number)
    settle(d)
    # the apply's own uevents woke the daemon while the apply held the lock: its run, once it had the
    # lock, converged to the apply's generation, not back to 2 VFs (and then again to 3)
    assert numvfs_writes(d) == written, d.log
    repaired_to(d, 3)


def test_a_daemon_started_after_an_edit_follows_the_generation_not_the_file(daemon, make_host, write_config):
    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=path).returncode == 0
    with open(path, "w") as fh:
        fh.write(CONFIG3)
    d = daemon(host=host)
    d.path = path  # the daemon reads the edited file only if told to
    d.proc.send_signal(signal.SIGTERM)
    d.stop()
    d = DaemonProcess(host.root, path, host_tmp(host))
    d.host, d.path = host, path
    try:
        ready(d)
        assert any("differs from the applied generation 1" in line for line in d.log), d.log
        assert pf1_vfs(d) == 2 and newest(d).number == 1
        repaired_to(d, 2)
    finally:
        d.stop()


def host_tmp(host):
    from pathlib import Path

    tmp = Path(host.root).parent / "daemon2"
    tmp.mkdir(exist_ok=True)
    return tmp


def test_sighup_applies_a_valid_file_and_records_it(daemon):
    d = daemon()
    ready(d)
    with open(d.path, "w") as fh:
        fh.write(CONFIG3)
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: newest(d).command == "reload", what="the reload's generation")
    gen = newest(d)
    assert gen.number == 2 and gen.outcome == "converged" and gen.config == CONFIG3.encode() and pf1_vfs(d) == 3
    repaired_to(d, 3)


def test_sighup_with_an_invalid_file_keeps_the_generation_and_says_so(daemon):
    d = daemon('[metrics]\ntextfile = "/var/lib/sriov-node/metrics.prom"\n' + CONFIG)
    ready(d)
    prom = os.path.join(d.host.root, "var/lib/sriov-node/metrics.prom")
    with open(d.path, "w") as fh:
        fh.write(CONFIG.replace("num_vfs = 2", 'num_vfs = "three"'))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: d.notified("reload refused"), what="the refused reload")
    d.wait_for(lambda: any("keeping generation 1" in line for line in d.log), what="the journal saying so")
    assert "sriov_node_config_valid 0" in open(prom).read()
    assert newest(d).number == 1
    repaired_to(d, 2)  # the applied generation still rules
    assert "sriov_node_config_valid 0" in open(prom).read()  # and the metrics still say the file is bad


def test_rollback_while_the_daemon_runs(daemon):
    d = daemon()
    ready(d)
    with open(d.path, "w") as fh:
        fh.write(CONFIG3)
    assert run_cli("apply", root=d.host.root, config=d.path).returncode == 0
    following(d, 2)
    result = run_cli("rollback", root=d.host.root, config=d.path)
    assert result.returncode == 0, result.stdout + result.stderr
    gen = newest(d)
    assert gen.command == "rollback" and gen.config == CONFIG.encode() and open(d.path).read() == CONFIG
    following(d, gen.number)
    repaired_to(d, 2)


def test_an_uncommitted_checkpoint_is_rolled_back_by_the_daemon(daemon):
    d = daemon()
    ready(d)
    with open(d.path, "w") as fh:
        fh.write(CONFIG3)
    result = run_cli("apply", "--checkpoint", "2", root=d.host.root, config=d.path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert pf1_vfs(d) == 3 and newest(d).pending
    d.wait_for(lambda: any("expired" in line for line in d.log) and newest(d).number == 3, timeout=60,
               what="the daemon's rollback at the deadline")
    gen = newest(d)
    assert gen.config == CONFIG.encode() and open(d.path).read() == CONFIG  # file and host as before
    d.wait_for(lambda: pf1_vfs(d) == 2, what="PF1 back to 2 VFs")
    assert generations.get(open_host(d.host.root), 2).checkpoint["state"] == "expired"
    repaired_to(d, 2)


def test_a_committed_checkpoint_stays(daemon):
    d = daemon()
    ready(d)
    with open(d.path, "w") as fh:
        fh.write(CONFIG3)
    assert run_cli("apply", "--checkpoint", "2", root=d.host.root, config=d.path).returncode == 0
    deadline = newest(d).checkpoint["deadline"]
    result = run_cli("commit", root=d.host.root, config=d.path)
    assert result.returncode == 0, result.stdout + result.stderr
    d.wait_for(lambda: any("no longer pending" in line for line in d.log), what="the daemon disarming its timer")
    while time.time() <= deadline + 0.5:  # past the deadline: nothing may happen then
        time.sleep(0.1)
    repaired_to(d, 3)
    assert newest(d).number == 2 and not any("expired" in line for line in d.log)
    assert open(d.path).read() == CONFIG3


def test_the_pid_file_names_the_running_daemon(daemon):
    d = daemon()
    ready(d)
    pid = os.path.join(d.host.root, "run/sriov-node/agent.pid")
    assert open(pid).read().strip() == str(d.proc.pid)
    assert d.stop() == 0
    assert not os.path.exists(pid)


def test_sighup_refused_by_the_host_keeps_the_generation(daemon):
    d = daemon()
    ready(d)
    h = open_host(d.host.root)
    SimKernel(d.host.root).hold_vf(h.sysfs.vf_address(PF0, 0), 4242, "qemu-kvm")  # a VM holds a vfio VF of PF0
    with open(d.path, "w") as fh:
        fh.write(CONFIG.replace("num_vfs = 4", "num_vfs = 6"))  # 6 VFs: disabling the VM's VF first
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for(lambda: any("reload:" in line and "was not applied (refused)" in line for line in d.log),
               what="the refused reload")
    assert newest(d).number == 1 and open_host(d.host.root).sysfs.num_vfs(PF0) == 4
    d.wait_for(lambda: d.notified("STATUS=2 of 2 PF(s) converged (generation 1)"), what="STATUS after the refusal")


# ---------------------------------------------------------------------------- what a run reads


def _recording_reads(host):
    """Every sysfs path the agent reads (or lists) on `host` from now on."""
    seen: List[str] = []
    plain = host.sysfs.path

    def path(base, *parts):
        seen.append("/".join((base,) + parts))
        return plain(base, *parts)

    host.sysfs.path = path
    return seen


def test_a_run_for_one_pf_reads_nothing_of_the_other_pfs_vfs_for_its_metrics(make_host, write_config):
    # The metrics after a run of one PF come from that run's report; the other PF's from the
    # metrics written before: its VFs are not read again on every event of its neighbour.
    import logging

    from prometheus_client.parser import text_string_to_metric_families

    from sriov_node.engine.survey import load_desired
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    host = make_host(vfio_loaded=True)
    os.makedirs(os.path.join(host.root, "var/lib/node_exporter/textfile"))
    path = write_config('[metrics]\ntextfile = "/var/lib/node_exporter/textfile/sriov_node.prom"\n' + CONFIG)
    d = Daemon(host, path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    d.desired = load_desired(host, path)
    assert d.run_once(None).exit_code == 0  # every PF: converged, metrics of both written
    pf0_vfs = {host.sysfs.vf_address(PF0, i) for i in range(4)}
    pf1_vfs = {host.sysfs.vf_address(PF1, i) for i in range(2)}
    host.sysfs.unbind(host.sysfs.vf_address(PF0, 0), "vfio-pci")  # PF0 moved: its event's run
    reads = _recording_reads(host)
    report = d.run_once(frozenset({PF0}))
    assert [(o.pci, o.status) for o in report.outcomes] == [(PF0, "changed")]
    # (every PCI function's sriov_totalvfs is looked at: that is how a PF is told from the rest)
    touched = {vf for vf in pf0_vfs | pf1_vfs if any(vf in p and not p.endswith("/sriov_totalvfs") for p in reads)}
    assert touched == pf0_vfs  # PF0's VFs were read (the run's own read back), none of PF1's
    assert not [p for p in reads if PF1 in p and "virtfn" in p]
    text = open(os.path.join(host.root, "var/lib/node_exporter/textfile/sriov_node.prom")).read()
    found = {(s.name, s.labels.get("pf")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert found[("sriov_node_pf_converged", PF0)] == 1 and found[("sriov_node_pf_converged", PF1)] == 1
    assert found[("sriov_node_pf_vfs_actual", PF0)] == 4 and found[("sriov_node_pf_vfs_actual", PF1)] == 2
    assert found[("sriov_node_converged", None)] == 1


def test_an_event_run_reads_the_vf_settings_once_to_verify_them(make_host, write_config):
    # A run after a PF driver reload is recorded nowhere (no generation): the settings the kernel
    # gave the new VFs (a recorded run's pre-images) are not read before sending the wanted ones.
    # One RTM_GETLINK: the verification's.
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    d = Daemon(host, path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    d.desired = load_desired(host, path)
    assert d.run_once(None).exit_code == 0
    host.sysfs.unbind(PF0, "i40e")
    host.sysfs.drivers_probe(PF0)  # back with no VFs
    asked: List[str] = []
    plain = host.links.vf_links
    host.links.vf_links = lambda ifname, ifindex=None: asked.append(ifname) or plain(ifname, ifindex)
    report = d.run_once(frozenset({PF0}))
    assert [(o.pci, o.status) for o in report.outcomes] == [(PF0, "changed")]
    assert host.links.vf_links is not plain and asked == ["ens1f0"]
    assert plain("ens1f0")[3].trust is True and report.found == {}


def test_an_event_run_reads_the_generations_again_only_when_they_changed(make_host, write_config, monkeypatch):
    # The generations directory is watched (inotify): a run for an event reads the newest generation
    # again only when the watch says the directory changed since the last read.
    import logging

    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier
    from sriov_node.service.uevents import DirectoryWatch

    host = make_host(vfio_loaded=True)
    path = write_config(CONFIG)
    assert run_cli("apply", root=host.root, config=path).returncode == 0  # generation 1
    d = Daemon(host, path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    d.watch = DirectoryWatch(generations.directory(host))
    try:
        assert d._start() == 0 and d.generation == 1
        reads: List[int] = []
        plain = generations.current
        monkeypatch.setattr(generations, "current", lambda h: reads.append(1) or plain(h))
        assert d.run_once(None).exit_code == 0
        assert d.run_once(frozenset({PF0})).exit_code == 0
        assert reads == []  # nothing changed since the start read generation 1
        assert run_cli("apply", root=host.root, config=write_config(CONFIG3)).returncode == 0  # generation 2
        assert d.run_once(frozenset({PF0})).exit_code == 0
        assert len(reads) == 1 and d.generation == 2 and open_host(host.root).sysfs.num_vfs(PF1) == 3
    finally:
        d.watch.close()


def test_after_a_pfs_bind_the_run_waits_for_no_further_event(make_host, write_config, monkeypatch):
    # the bind ends the kernel's operation: what has arrived already is read, nothing is waited for
    import logging
    import select as select_module

    from sriov_node.service import daemon as daemon_module
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier
    from sriov_node.service.uevents import Uevent, UeventSource

    class Queued(UeventSource):
        def __init__(self, events):
            self.events = list(events)

        def fileno(self):
            return 0

        def receive(self):
            return self.events.pop(0) if self.events else None

    host = make_host(vfio_loaded=True)
    d = Daemon(host, write_config(CONFIG), notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    bind = Uevent("bind", "pci", f"/devices/pci0000:00/0000:00:03.0/{PF0}", 10)
    later = Uevent("add", "net", f"/devices/pci0000:00/0000:00:03.0/{PF0}/net/ens1f0", 11)
    source = Queued([bind])
    d.sources = [source]
    timeouts: List[float] = []

    def fake_select(r, w, x, timeout):
        timeouts.append(timeout)
        if source.events:
            return [source], [], []
        source.events.append(later) if len(timeouts) == 1 else None  # one more event already waiting
        return ([source] if source.events else []), [], []

    monkeypatch.setattr(daemon_module.select, "select", fake_select)
    assert d._collect([source]) == {PF0}
    assert timeouts and all(t == 0 for t in timeouts) and not source.events
    assert select_module.select is fake_select
