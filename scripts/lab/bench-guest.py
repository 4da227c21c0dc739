"""Benchmarks that need the real kernel. Runs INSIDE the kernel-lab guest (scripts/bench starts it).

Prints one line `@@BENCH <json>`: every sample, so the host computes medians and ratios.
  convergence  the 64-VF NVMe PF: create 64 VFs bound to vfio-pci, by `sriov-node apply`, by the
               shell loop users write, and by the floor (the same writes from one bare Python
               process, no reads beyond the virtfn links); whole processes, alternated runs
  startup      `python -c pass` and `sriov-node --help` in the guest, cold and warm
  attributes   VLAN + trust + spoofchk on 64 netdevsim VFs: one batched request vs an `ip link` loop
  udevd        the same 64-VF state by systemd-udevd's .link [SR-IOV] sections (the anchor) and by our
               engine in a warm process, each until netdevsim's last VF setter call (SetterTrace)
  reload       a PF driver reload (netdevsim's driver unbound and bound again: the PF comes back
               with no VFs), until 64 VFs with their settings are back: by udevd's .link (the
               anchor), by our daemon, and by the daemon of an earlier checkout when
               BENCH_BEFORE names one (the before/after of a change, on the same kernel); then the
               same on the lab's Intel 82576 (igb, 7 VFs, igbvf) when the guest has one (LAB_IGB).
               Each round ends at the driver's last VF setter call, as ftrace recorded it (SetterTrace)
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
PY = sys.executable
SYS = "/sys/bus/pci/devices"
BIG = "0000:02:00.0"
NSIM = "netdevsim10"
out: Dict[str, Any] = {"repeat": REPEAT}


def sh(cmd: str, check: bool = True) -> str:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd}: {p.returncode} {p.stderr[-500:]}")
    return p.stdout


def put(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def timed(cmd: List[str], env: Dict[str, str] = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def wait(predicate, seconds: float = 60, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class LinkEvents:
    """Wakes the measurer when a netdev changes, so it looks only then. The kernel multicasts an
    RTM_NEWLINK to RTNLGRP_LINK after every RTM_SETLINK that sets VF settings (do_setlink:
    DO_SETLINK_NOTIFY -> netdev_state_change) while the PF's netdev is up (netdev_state_change
    sends nothing for a netdev that is down: the measurer brings netdevsim's PF netdev up as soon as
    it is there, `netdev_up`, and looks at igb's, which stays down, every 50 ms), and when a netdev
    comes or is renamed. The last step of every path measured here (udevd's .link, our daemon, our
    engine) is such a request, so a look after each burst of events finds the state complete soon
    after it is (when it was complete is SetterTrace's to say). Polling instead (a netlink dump of
    every VF each 20 ms) took most of the guest's CPU from the path it measured. The socket is only
    a wake-up: its messages are dropped unread (what `done` reads comes from its own request)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        self.sock.bind((0, 1))  # RTMGRP_LINK

    def drain(self) -> None:
        while True:
            try:
                if not self.sock.recv(65536):
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:  # ENOBUFS: events were dropped; what matters is that there were some
                    raise


_EVENTS: List[LinkEvents] = []


def wait_link(predicate, seconds: float = 60, quiet: float = 0.02, fallback: float = 0.25,
              on_event=None) -> bool:
    """`predicate` checked at once, then once each burst of link events is over (no event for `quiet`
    s: udevd's .link sends one RTM_SETLINK per VF, our daemon one for all; each path's last event
    is followed by the same `quiet`, and a look costs the guest's CPU once per burst, not once per
    event), and every `fallback` s in case none comes. Drained before each look: an event during a
    look starts the next burst. `on_event`: called at every wake-up, before the burst is over (the
    PF's netdev brought up the moment it comes, `netdev_up`)."""
    if not _EVENTS:
        _EVENTS.append(LinkEvents())
    sock = _EVENTS[0].sock
    deadline = time.monotonic() + seconds
    while True:
        _EVENTS[0].drain()
        if on_event is not None:
            on_event()
        if predicate():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if select.select([sock], [], [], min(fallback, left))[0]:
            while time.monotonic() < deadline:
                _EVENTS[0].drain()
                if on_event is not None:
                    on_event()
                if not select.select([sock], [], [], quiet)[0]:
                    break


IFF_UP = 0x1


def netdev_up(device: str, ipr) -> None:
    """The device's netdev up, if it has one that is down: a node's network configuration keeps its
    PF up, and only then does the kernel tell of each change of VF settings (netdev_state_change).
    One read of its flags when it is up already."""
    try:
        names = sorted(os.listdir(f"{device}/net"))
        if not names:
            return
        with open(f"{device}/net/{names[0]}/flags") as fh:
            if int(fh.read(), 16) & IFF_UP:
                return
        with open(f"{device}/net/{names[0]}/ifindex") as fh:
            ipr.link("set", index=int(fh.read()), state="up")
    except Exception:  # not there yet, gone again (a rename), or netlink refused: the next event retries
        pass


TRACING = "/sys/kernel/tracing"


class SetterTrace:
    """When the kernel ran the driver's VF setters (its ndo_set_vf_vlan, _trust, _spoofchk), from
    ftrace's function tracer on those functions only, timestamped on trace_clock "mono"
    (CLOCK_MONOTONIC: time.monotonic()'s clock). A round ends at the last setter call before the
    end of the measurer's look that finds the state complete (`until_set`): each path's end is the
    kernel's own record of its last setting, not the look. A look (a netlink dump under emulation)
    takes 20-55 ms, after a 20 ms quiet period: timed by the look, a path whose settings landed
    while a look was under way was charged that look, the quiet period and another look."""

    def __init__(self, functions: List[str]):
        if not os.path.exists(f"{TRACING}/trace"):
            sh(f"mount -t tracefs nodev {TRACING}")
        self._put("tracing_on", "0")
        self._put("current_tracer", "nop")
        self._put("trace_clock", "mono")
        self._put("set_ftrace_filter", " ".join(functions))
        self._put("current_tracer", "function")
        self.clear()
        self._put("tracing_on", "1")

    @staticmethod
    def _put(name: str, value: str) -> None:
        # opened with O_TRUNC, unlike `put`: set_ftrace_filter opened without it adds to the filter
        with open(f"{TRACING}/{name}", "w") as fh:
            fh.write(value + "\n")

    def clear(self) -> None:
        open(f"{TRACING}/trace", "w").close()  # opened for writing with O_TRUNC: the buffer is emptied

    def calls(self, since: float, before: float) -> List[float]:
        """The setter calls' times in [since, before]."""
        import re

        with open(f"{TRACING}/trace") as fh:
            text = fh.read()
        return sorted(t for t in (float(m.group(1)) for m in re.finditer(r"\s(\d+\.\d+): \w+ <-", text))
                      if since <= t <= before)

    def close(self) -> None:
        self._put("tracing_on", "0")
        self._put("current_tracer", "nop")
        open(f"{TRACING}/set_ftrace_filter", "w").close()  # every function again, for whoever traces next
        self.clear()


class ReloadPf:
    """A PF whose driver the reload rows unbind and bind: netdevsim's (64 VFs) or, with the lab's
    LAB_IGB, an Intel 82576 under QEMU's igb (7 VFs, igbvf). `setters`: its driver's VF setters
    (the ndo_set_vf_* functions, what SetterTrace times)."""

    def __init__(self, label: str, device: str, driver: str, vfs: int, match: str, select: str, up: bool = True,
                 fallback: float = 0.25, setters: Tuple[str, ...] = ()):
        self.label, self.device, self.driver, self.vfs = label, device, driver, vfs
        self.setters = setters
        self.match = match  # the .link's [Match] line: the PF's netdev as udevd knows it
        self.select = select  # the daemon's PF selector (a config line)
        # whether the measurer brings the PF's netdev up as it comes (then the kernel tells of each
        # change of VF settings); without, it looks every `fallback` s as well
        self.up, self.fallback = up, fallback

    def wait(self, predicate, seconds: float = 60, ipr=None) -> bool:
        return wait_link(predicate, seconds, fallback=self.fallback,
                         on_event=(lambda: netdev_up(self.device, ipr)) if self.up else None)

    @property
    def name(self) -> str:
        return os.path.basename(self.device)

    def ifname(self) -> str:
        return sorted(os.listdir(f"{self.device}/net"))[0]

    def done(self, ifname: str, ipr, vlan: int) -> bool:
        """All VFs with `vlan`: the sriov_numvfs file first (cheap), then one netlink dump. The
        measurer shares the guest's one CPU with what it measures: it must not eat it. igb's PF
        netdev takes the kernel's name again after a reload: it is looked up, not remembered."""
        try:
            if open(f"{self.device}/sriov_numvfs").read().strip() != str(self.vfs):
                return False
            return nsim_vlans(ifname if self is NSIM_PF else self.ifname(), ipr) == [vlan] * self.vfs
        except (OSError, ValueError):  # the PF's netdev not (yet) there
            return False


NSIM_PF = ReloadPf("netdevsim", f"/sys/bus/netdevsim/devices/{NSIM}", "/sys/bus/netdevsim/drivers/netdevsim", 64,
                   "OriginalName={ifname}", 'name = "{ifname}"',
                   setters=("nsim_set_vf_vlan", "nsim_set_vf_trust", "nsim_set_vf_spoofchk"))
# igb's PF stays down: bringing a running igb PF up costs ~0.5 s of the guest's kernel and makes
# enabling VFs on it slower (a running PF is closed and opened again), so whoever writes
# sriov_numvfs after the measurer's "up" would pay for it: the measurer looks every 50 ms instead
# (a 7-VF dump is cheap)
IGB_PF = ReloadPf("igb", f"{SYS}/0000:03:00.0", "/sys/bus/pci/drivers/igb", 7,  # scripts/kernel-lab LAB_IGB=1
                  "Path=pci-0000:03:00.0", 'pci = "0000:03:00.0"', up=False, fallback=0.05,
                  setters=("igb_ndo_set_vf_vlan", "igb_ndo_set_vf_trust", "igb_ndo_set_vf_spoofchk"))


def nsim_done(ifname: str, ipr, vlan: int) -> bool:
    return NSIM_PF.done(ifname, ipr, vlan)


# ---------------------------------------------------------------------------- convergence (NVMe)


def reset_nvme() -> None:
    put(f"{SYS}/{BIG}/sriov_numvfs", "0\n")
    put(f"{SYS}/{BIG}/sriov_drivers_autoprobe", "1\n")


def all_on_vfio() -> bool:
    links = [n for n in os.listdir(f"{SYS}/{BIG}") if n.startswith("virtfn")]
    if len(links) != 64:
        return False
    return all(os.path.basename(os.readlink(f"{SYS}/{BIG}/{n}/driver")) == "vfio-pci"
               for n in links if os.path.islink(f"{SYS}/{BIG}/{n}/driver")) and all(
        os.path.islink(f"{SYS}/{BIG}/{n}/driver") for n in links)


SHELL_LOOP = f"""
echo 0 > {SYS}/{BIG}/sriov_drivers_autoprobe
echo 64 > {SYS}/{BIG}/sriov_numvfs
for i in $(seq 0 63); do
  vf=$(basename $(readlink {SYS}/{BIG}/virtfn$i))
  echo vfio-pci > {SYS}/$vf/driver_override
  echo $vf > /sys/bus/pci/drivers_probe
done
echo 1 > {SYS}/{BIG}/sriov_drivers_autoprobe
"""

FLOOR = f"""
import os
def put(p, v):
    fd = os.open(p, os.O_WRONLY); os.write(fd, v.encode()); os.close(fd)
pf = "{SYS}/{BIG}"
put(pf + "/sriov_drivers_autoprobe", "0\\n")
put(pf + "/sriov_numvfs", "64\\n")
for i in range(64):
    vf = os.path.basename(os.readlink(pf + "/virtfn%d" % i))
    put("{SYS}/" + vf + "/driver_override", "vfio-pci\\n")
    put("/sys/bus/pci/drivers_probe", vf + "\\n")
put(pf + "/sriov_drivers_autoprobe", "1\\n")
"""


def bench_convergence() -> None:
    sh("modprobe nvme && modprobe vfio-pci")
    if not wait(lambda: os.path.islink(f"{SYS}/{BIG}/driver")):
        raise RuntimeError("the 64-VF NVMe PF got no driver")
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(f'[[pf]]\npci = "{BIG}"\nnum_vfs = 64\n  [[pf.vfs]]\n  range = "0-63"\n  driver = "vfio-pci"\n')
    config.close()
    methods = {
        "shell": ["bash", "-c", SHELL_LOOP],
        "floor": [PY, "-c", FLOOR],
        "apply": [BIN, "--config", config.name, "apply"],
    }
    samples: Dict[str, List[float]] = {name: [] for name in methods}
    timed(methods["apply"])  # warm the page cache for every method alike
    for _ in range(REPEAT):
        for name, argv in methods.items():
            reset_nvme()
            samples[name].append(timed(argv))
            if not all_on_vfio():
                raise RuntimeError(f"{name} did not bind all 64 VFs to vfio-pci")
    # the work alone, in a process that has started already: the engine vs the floor's writes
    from sriov_node.config import load_config
    from sriov_node.host import open_host
    from sriov_node.engine.reconcile import reconcile

    desired = load_config(config.name)
    floor_code = compile(FLOOR, "floor", "exec")
    samples["engine_work"], samples["floor_work"] = [], []
    for _ in range(REPEAT):
        reset_nvme()
        start = time.perf_counter()
        report = reconcile(open_host("/"), desired)
        samples["engine_work"].append(time.perf_counter() - start)
        if report.exit_code != 0 or not all_on_vfio():
            raise RuntimeError("the engine did not converge")
        reset_nvme()
        start = time.perf_counter()
        exec(floor_code, {})
        samples["floor_work"].append(time.perf_counter() - start)
    reset_nvme()
    out["convergence"] = samples
    cold = timed([BIN, "--help"])
    out["startup"] = {"python": [timed([PY, "-c", "pass"]) for _ in range(REPEAT)],
                      "help_cold": [cold], "help": [timed([BIN, "--help"]) for _ in range(REPEAT)]}


# ---------------------------------------------------------------------------- VF attributes (netdevsim)


def nsim_ifname() -> str:
    return sorted(os.listdir(f"/sys/bus/netdevsim/devices/{NSIM}/net"))[0]


def nsim_vlans(ifname: str, ipr) -> List[int]:
    from sriov_node.host.links import RTEXT_FILTER_SKIP_STATS, RTEXT_FILTER_VF, newlink_vf_links

    # one request, by name (a lookup of the index first would double what the measurer takes from the
    # guest's one CPU while it waits: the CPU the daemon and udevd it measures need)
    (msg,) = ipr.link("get", ifname=ifname, ext_mask=RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS)
    _, vfs = newlink_vf_links(msg)
    return [vfs[i].vlan for i in sorted(vfs)] if vfs is not None else []


def setup_nsim() -> str:
    sh("modprobe netdevsim && echo '10 1' > /sys/bus/netdevsim/new_device")
    wait(lambda: os.path.isdir(f"/sys/bus/netdevsim/devices/{NSIM}/net"))
    put(f"/sys/kernel/debug/netdevsim/{NSIM}/max_vfs", "64\n")  # kept across a driver reload
    ifname = nsim_ifname()
    sh(f"ip link set {ifname} up")  # up, as a node keeps its PF: the kernel then tells of VF settings
    return ifname


def bench_attributes(ifname: str) -> None:
    put(f"/sys/bus/netdevsim/devices/{NSIM}/sriov_numvfs", "64\n")
    start = time.perf_counter()
    from pyroute2 import IPRoute

    from sriov_node.host.links import NetlinkLinks
    out["pyroute2_import"] = time.perf_counter() - start
    links = NetlinkLinks()
    ipr = IPRoute()
    samples: Dict[str, List[float]] = {"batched": [], "ip_loop": []}
    for n in range(REPEAT):
        vlan = 100 + n
        start = time.perf_counter()
        links.set_vf_links(ifname, [(i, {"vlan": (vlan, 0, "802.1Q"), "spoofchk": False, "trust": True})
                                     for i in range(64)])
        samples["batched"].append(time.perf_counter() - start)
        assert nsim_vlans(ifname, ipr) == [vlan] * 64
        loop = "".join(f"ip link set dev {ifname} vf {i} vlan {vlan + 50} trust on spoofchk off\n" for i in range(64))
        start = time.perf_counter()
        subprocess.run(["bash", "-c", loop], check=True)
        samples["ip_loop"].append(time.perf_counter() - start)
        assert nsim_vlans(ifname, ipr) == [vlan + 50] * 64
    out["attributes"] = samples


def link_file(vfs: int, match: str = "OriginalName={ifname}") -> str:
    """udevd's .link for the PF (`match`): its VFs, each with VLAN 300, trust on, spoof check off."""
    return """[Match]
%s

[Link]
NamePolicy=keep kernel
SR-IOVVirtualFunctions=%d
""" % (match, vfs) + "".join(f"\n[SR-IOV]\nVirtualFunction={i}\nVLANId=300\nTrust=yes\nMACSpoofCheck=no\n" for i in range(vfs))


LINK = link_file(64)


def bench_udevd(ifname: str, ipr) -> None:
    """The anchor: udevd's .link [SR-IOV] sections (on a triggered "add"), against our engine, same state."""
    nsim = f"/sys/bus/netdevsim/devices/{NSIM}/sriov_numvfs"
    os.makedirs("/run/systemd/network", exist_ok=True)
    with open("/run/systemd/network/10-sriov-bench.link", "w") as fh:
        fh.write(LINK.format(ifname=ifname))
    sh("/lib/systemd/systemd-udevd --daemon && udevadm settle -t 30", check=False)
    samples: Dict[str, List[float]] = {"udevd": [], "engine": []}
    trace = SetterTrace(list(NSIM_PF.setters))
    for _ in range(REPEAT):
        put(nsim, "0\n")
        trace.clear()
        start = time.monotonic()
        sh(f"udevadm trigger --action=add /sys/class/net/{ifname}")
        samples["udevd"].append(until_set(trace, start, 64, lambda: nsim_done(ifname, ipr, 300), wait_link,
                                          "netdevsim settings: udevd"))
    with open("/run/systemd/network/10-sriov-bench.link", "w") as fh:  # keep the name, drop the [SR-IOV] part
        fh.write(LINK.format(ifname=ifname).split("SR-IOVVirtualFunctions")[0])
    sh("udevadm control --reload", check=False)
    config = daemon_config(ifname)
    from sriov_node.config import load_config
    from sriov_node.host import open_host
    from sriov_node.engine.reconcile import reconcile

    desired = load_config(config)
    for _ in range(REPEAT):
        put(nsim, "0\n")
        host = open_host("/")
        trace.clear()
        start = time.monotonic()
        report = reconcile(host, desired)
        assert report.exit_code == 0
        samples["engine"].append(until_set(trace, start, 64, lambda: nsim_vlans(ifname, ipr) == [400] * 64,
                                           lambda look: look(), "netdevsim settings: engine"))
    trace.close()
    out["udevd"] = samples


def daemon_config(ifname: str, vfs: int = 64, select: str = 'name = "{ifname}"') -> str:
    config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    config.write(f'[[pf]]\n{select.format(ifname=ifname)}\nnum_vfs = {vfs}\n  [[pf.vfs]]\n  range = "0-{vfs - 1}"\n'
                 "  vlan = 400\n  trust = true\n  spoofchk = false\n")
    config.close()
    return config.name


def driver_reload(pf: ReloadPf = NSIM_PF) -> float:
    """The PF's driver unbound (its VFs go with it) and bound again; returns the bind's time."""
    put(f"{pf.driver}/unbind", pf.name)
    if not wait(lambda: not os.path.exists(f"{pf.device}/driver"), 30):
        raise RuntimeError(f"{pf.name} is still bound")
    time.sleep(0.5)  # whatever reacts to the unbind has done so: only the bind is timed
    start = time.monotonic()
    put(f"{pf.driver}/bind", pf.name)
    return start


def until_set(trace: SetterTrace, start: float, vfs: int, done, wait_for, label: str) -> float:
    """From `start` to the last VF setter call (SetterTrace) before the end of the look (`done`) that
    finds the state complete; `wait_for(look)` runs the looks. NaN when the state never comes or the
    setters ran fewer than once per VF (the state was there before: nothing was timed)."""
    looks: List[float] = []

    def look() -> bool:
        ok = done()
        looks.append(time.monotonic())  # its end: the state it read was complete by then
        return ok

    if not wait_for(look):
        return float("nan")
    calls = trace.calls(start, looks[-1])
    out.setdefault("setter_trace", []).append(
        {"what": label, "calls": len(calls), "first": calls[0] - start if calls else None,
         "last": calls[-1] - start if calls else None, "look_end": looks[-1] - start, "looks": len(looks)})
    return calls[-1] - start if len(calls) >= vfs else float("nan")


def reload_round(pf: ReloadPf, ifname: str, ipr, vlan: int, trace: SetterTrace, label: str,
                 seconds: float = 60) -> float:
    """One timed reload: from the bind to the last VF setter call before the end of the look that
    finds all `pf.vfs` VFs with `vlan` (and the other settings)."""
    trace.clear()
    start = driver_reload(pf)
    return until_set(trace, start, pf.vfs, lambda: pf.done(ifname, ipr, vlan),
                     lambda look: pf.wait(look, seconds, ipr=ipr), f"{pf.label} reload: {label}")


def run_converged(log: List[str], mark: int) -> bool:
    """The daemon's journal, after line `mark`, has a run that ended with the PF converged."""
    import re

    return any(re.search(r"\brun \d+:.*\b(changed|unchanged) \(\d+ ms\)", line) for line in log[mark:])


def bench_reload(ifname: str, ipr, pf: ReloadPf = NSIM_PF, key: str = "reload") -> None:
    """A PF driver reload, answered by udevd's .link [SR-IOV] (the anchor) and by our daemon (and the
    daemon of BENCH_BEFORE). Rounds interleaved, so the host's load affects them alike: the daemons
    run from the start and are stopped (SIGSTOP) outside their own rounds; .link has its [SR-IOV]
    part only in udevd's rounds."""
    import threading

    link = "/run/systemd/network/10-sriov-bench.link"
    os.makedirs(os.path.dirname(link), exist_ok=True)
    with_sriov = link_file(pf.vfs, pf.match).format(ifname=ifname)
    name_only = with_sriov.split("SR-IOVVirtualFunctions")[0]

    def use_link(text: str) -> None:
        with open(link, "w") as fh:
            fh.write(text)
        sh("udevadm control --reload", check=False)

    use_link(name_only)
    sh("pgrep -x systemd-udevd >/dev/null || /lib/systemd/systemd-udevd --daemon", check=False)
    sh("udevadm settle -t 30", check=False)
    config = daemon_config(ifname, pf.vfs, pf.select)
    # the daemon follows the applied generation, not a file: apply the config first (as a user does;
    # an earlier part of this run applied another one)
    sh(f"{BIN} --config {config} apply")
    checkouts = {"daemon": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    if os.environ.get("BENCH_BEFORE"):
        checkouts["before"] = os.environ["BENCH_BEFORE"]
    daemons: Dict[str, subprocess.Popen] = {}
    logs: Dict[str, List[str]] = {}
    for name, checkout in checkouts.items():
        proc = subprocess.Popen([PY, "-m", "sriov_node", "--config", config, "daemon", "--no-notify"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=checkout,
                                env={**os.environ, "PYTHONPATH": checkout})  # cwd: `-m` looks there first
        log = logs[name] = []
        threading.Thread(target=lambda p=proc, l=log: l.extend(p.stderr), daemon=True).start()
        if not wait(lambda: any("ready:" in line for line in log), 180, 0.05):
            raise RuntimeError(f"the {name} daemon did not start:\n" + "".join(log[-30:]))
        os.kill(proc.pid, signal.SIGSTOP)
        daemons[name] = proc
    samples: Dict[str, List[float]] = {"udevd": [], **{name: [] for name in daemons}}
    trace = SetterTrace(list(pf.setters))
    try:
        for _ in range(REPEAT):
            use_link(with_sriov)
            samples["udevd"].append(reload_round(pf, ifname, ipr, 300, trace, "udevd"))
            use_link(name_only)
            for name, proc in daemons.items():
                mark = len(logs[name])
                os.kill(proc.pid, signal.SIGCONT)  # it hears what happened meanwhile and converges
                if not pf.wait(lambda: pf.done(ifname, ipr, 400), 120, ipr=ipr):
                    raise RuntimeError(f"the {name} daemon did not converge:\n" + "".join(logs[name][-30:]))
                # its run over (the settings are there before its read-back ends): neither the reload
                # nor the stop below may land in the middle of a run
                wait(lambda: run_converged(logs[name], mark), 120, 0.05)
                time.sleep(0.5)
                mark = len(logs[name])
                samples[name].append(reload_round(pf, ifname, ipr, 400, trace, name))
                wait(lambda: run_converged(logs[name], mark), 120, 0.05)
                time.sleep(0.5)
                os.kill(proc.pid, signal.SIGSTOP)
    finally:
        trace.close()
        for name, proc in daemons.items():
            os.kill(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            out.setdefault(f"{key}_log", {})[name] = "".join(logs[name][-12:])
        os.unlink(link)
        sh("udevadm control --reload", check=False)
    out[key] = samples


if __name__ == "__main__":
    what = sys.argv[1:] or ["convergence", "attributes", "reload"]
    if "convergence" in what:
        bench_convergence()
    if "attributes" in what or "reload" in what:
        nsim_if = setup_nsim()
        if "attributes" in what:
            bench_attributes(nsim_if)  # first: it times pyroute2's cold import
        from pyroute2 import IPRoute

        nsim_ipr = IPRoute()
        if "attributes" in what:
            bench_udevd(nsim_if, nsim_ipr)
        if "reload" in what:
            bench_reload(nsim_if, nsim_ipr)
            if os.path.isdir(IGB_PF.device):  # the lab's igb (LAB_IGB): the same, on a real NIC's driver
                sh("modprobe igb && modprobe igbvf", check=False)
                wait(lambda: os.path.isdir(f"{IGB_PF.device}/net"), 30)
                sh("udevadm settle -t 30", check=False)  # its name as udevd leaves it
                put(f"{IGB_PF.device}/sriov_numvfs", "0\n")
                bench_reload(IGB_PF.ifname(), nsim_ipr, IGB_PF, "reload_igb")
    print("@@BENCH " + json.dumps(out), flush=True)
