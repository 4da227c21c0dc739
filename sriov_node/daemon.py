"""`sriov-node daemon`: keep the node converged as uevents say something moved.

    start:  load the config; converge every PF; READY=1
    loop:   sleep in select() on the uevent source and the signal pipe (idle = zero wake-ups)
            event(s)  -> the PFs they touch, after a short quiet period (bursts coalesce)
                      -> reconcile(only=those PFs)
            SIGHUP    -> re-read the config (an invalid one is logged, the old one kept)
            SIGTERM   -> stop between two actions; STOPPING=1

It shares the engine's machine-wide lock with `apply` and `boot`, so a manual `apply` while it
runs is safe. Events whose SEQNUM the last read of their PF already covers are dropped: the
echoes of its own writes never start another round. A PF that keeps failing is retried with an
exponential back-off, not on every event; a PF whose driver is gone waits for its bind event.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from typing import Dict, FrozenSet, Optional, Set

from sriov_node.errors import SriovNodeError
from sriov_node.host import Host
from sriov_node.host.paths import PCI_DEVICES
from sriov_node.journal import Notifier, fields
from sriov_node.model import DesiredState
from sriov_node.reconcile import Report, load_desired, reconcile
from sriov_node.uevents import UeventSource, open_source, route

BACKOFF_FIRST, BACKOFF_MAX = 2.0, 300.0


class Daemon:
    def __init__(self, host: Host, config: str, *, notifier: Notifier, log: logging.Logger,
                 debounce: float = 0.05, max_delay: float = 1.0, timeout: float = 60.0):
        self.host = host
        self.config = config
        self.notifier = notifier
        self.log = log
        self.debounce = debounce
        self.max_delay = max_delay
        self.timeout = timeout
        self.desired: Optional[DesiredState] = None
        self.source: Optional[UeventSource] = None
        self.covered: Dict[str, int] = {}  # PF -> SEQNUM its last read reflects
        self.known_vfs: Dict[str, str] = {}  # VF -> PF, for VFs that are gone when their event arrives
        self.failures: Dict[str, int] = {}  # PF -> consecutive failed runs
        self.not_before: Dict[str, float] = {}  # PF -> no new attempt before (back-off)
        self.pending: Set[str] = set()  # PFs waiting for their back-off to end
        self.outcomes: Dict[str, str] = {}  # PF -> last status, for STATUS=
        self.runs = 0
        self._stop = False
        self._reload = False
        self._wake_r, self._wake_w = -1, -1
        self._next_watchdog: Optional[float] = None
        self._metrics_path: Optional[str] = None  # the last [metrics] textfile, kept through an invalid reload

    # ------------------------------------------------------------------ signals

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stop = True

    def _on_reload(self, signum: int, frame: object) -> None:
        self._reload = True

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _cancelled(self) -> bool:
        """Asked by the engine between actions and during waits: stop? (and keep the watchdog fed)."""
        self._feed_watchdog()
        return self._stop

    def _feed_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        now = time.monotonic()
        if self._next_watchdog is None or now >= self._next_watchdog:
            self.notifier.watchdog()
            self._next_watchdog = now + interval

    # ------------------------------------------------------------------ runs

    def summary(self) -> str:
        if not self.outcomes:
            return "no configured PF present"
        good = [pf for pf, st in self.outcomes.items() if st in ("changed", "unchanged")]
        bad = sorted(pf for pf in self.outcomes if pf not in good)
        text = f"{len(good)} of {len(self.outcomes)} PF(s) converged"
        return text + (f"; not converged: {', '.join(bad)}" if bad else "")

    def run_once(self, only: Optional[FrozenSet[str]]) -> Optional[Report]:
        """One engine run (all PFs, or `only`); records what the event routing and back-off need."""
        assert self.desired is not None
        self.runs += 1
        try:
            report = reconcile(self.host, self.desired, only=only, timeout=self.timeout, cancelled=self._cancelled)
        except SriovNodeError as exc:  # the lock held too long by a manual run, a state problem
            self.log.warning("run skipped: %s; retrying", exc)
            for pf in only or self.outcomes:
                self._fail(pf)
            return None
        for o in report.outcomes:
            if o.pci is None:
                self.log.warning(o.error or f"{o.key}: not applied", extra=fields())
                continue
            self.outcomes[o.pci] = o.status
            if o.seqnum is not None:
                self.covered[o.pci] = o.seqnum
            for action in o.actions if o.writes else ():
                self.log.info("%s: %s", o.pci, action["op"], extra=fields(o.pci, action.get("vf"), action["op"]))
            if o.converged:
                if o.writes:
                    self.log.info("%s: converged (%d write(s))", o.pci, o.writes, extra=fields(o.pci))
                self.failures.pop(o.pci, None)
                self.not_before.pop(o.pci, None)
            else:
                for line in (o.error or o.status).splitlines():
                    self.log.error(line, extra=fields(o.pci, (o.detail or {}).get("vf")))
                if self._driverless(o.pci):
                    # Only the PF's bind (a uevent) can change that: no timed retry, and no back-off
                    # that would make the bind wait (a firmware update keeps the driver away for long)
                    self.failures.pop(o.pci, None)
                    self.not_before.pop(o.pci, None)
                    self.log.info("%s: waiting for its driver to be bound (its uevent starts the next run)", o.pci,
                                  extra=fields(o.pci))
                else:
                    self._fail(o.pci)
        self._learn_vfs(report)
        self._write_metrics(self.desired)
        scope = "every PF" if only is None else "only " + ",".join(sorted(only))
        self.log.info("run %d: %s: %s", self.runs, scope,
                      ", ".join(f"{o.pci or o.key} {o.status}" for o in report.outcomes) or "nothing selected")
        self.notifier.status(self.summary())
        return report

    def _write_metrics(self, desired: Optional[DesiredState], config_valid: bool = True) -> None:
        """Refresh [metrics] textfile (node_exporter's textfile collector) when the config asks for one."""
        from sriov_node.metrics import textfile_path, write_textfile

        path = textfile_path(self.host, desired) or self._metrics_path
        if path is None:
            return
        self._metrics_path = path
        try:
            write_textfile(self.host, desired, path, config_valid=config_valid)
        except SriovNodeError as exc:
            self.log.warning("metrics not written: %s", exc)

    def _driverless(self, pf: str) -> bool:
        """A PCI PF that is gone or has no driver now."""
        sysfs = self.host.sysfs
        return sysfs.is_pci(pf) and (not sysfs.pf_exists(pf) or sysfs.pf_driver(pf) is None)

    def _fail(self, pf: str) -> None:
        n = self.failures[pf] = self.failures.get(pf, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (n - 1))
        self.not_before[pf] = time.monotonic() + delay
        self.pending.add(pf)  # retried when the back-off ends, event or not
        self.log.info("%s: next attempt in %.0f s (failure %d in a row)", pf, delay, n, extra=fields(pf))

    def _learn_vfs(self, report: Report) -> None:
        for o in report.outcomes:
            if o.pci is None or not self.host.sysfs.is_pci(o.pci):
                continue
            for entry in self.host.sysfs.listdir(PCI_DEVICES, o.pci):
                if entry.startswith("virtfn"):
                    vf = self.host.sysfs.link_name(PCI_DEVICES, o.pci, entry)
                    if vf:
                        self.known_vfs[vf] = o.pci

    # ------------------------------------------------------------------ loop

    def _collect(self) -> Set[str]:
        """Route the waiting events, then keep listening until quiet (a 64-VF burst is one run)."""
        assert self.source is not None
        due = route(self.source.drain(), self.host, self.known_vfs, self.covered)
        if not due:
            return due
        end = time.monotonic() + self.max_delay
        while not self._stop:
            left = min(self.debounce, end - time.monotonic())
            if left <= 0:
                break
            ready, _, _ = select.select([self.source], [], [], left)
            if not ready:
                break
            due |= route(self.source.drain(), self.host, self.known_vfs, self.covered)
        return due

    def _timeout(self) -> Optional[float]:
        now = time.monotonic()
        deadlines = [self.not_before.get(pf, now) for pf in self.pending]
        if self._next_watchdog is not None:
            deadlines.append(self._next_watchdog)
        return None if not deadlines else max(0.0, min(deadlines) - now)

    def _reload_config(self) -> None:
        self._reload = False
        self.notifier.reloading()
        try:
            desired = load_desired(self.host, self.config)
        except SriovNodeError as exc:
            for line in str(exc).splitlines():
                self.log.error("reload: %s", line)
            self.log.error("reload: the configuration is invalid; keeping the previous one")
            self._write_metrics(None, config_valid=False)
            self.notifier.ready(f"{self.summary()}; reload refused: invalid configuration, previous one kept")
            return
        self.desired = desired
        self.log.info("reload: %s read; converging every PF", self.config)
        self.pending.clear()
        self.failures.clear()
        self.not_before.clear()
        self.outcomes.clear()
        self.run_once(None)
        self.notifier.ready(self.summary())

    def run(self) -> int:
        try:
            self.desired = load_desired(self.host, self.config)
        except SriovNodeError as exc:
            for line in str(exc).splitlines():
                self.log.error(line)
            return exc.exit_code
        try:
            self.source = open_source(self.host)
        except (OSError, ImportError) as exc:
            self.log.error("cannot listen to uevents: %s (pyudev needs a netlink socket: not in this container?); "
                           "the boot-time `sriov-node boot` still converges the node", exc)
            return 1
        self._install_signals()
        self.log.info("listening to %s; config %s", self.source.description, self.config)
        try:
            self._feed_watchdog()
            self.run_once(None)
            if not self._stop:
                self.notifier.ready(self.summary())
                self.log.info("ready: %s", self.summary())
            while not self._stop:
                try:
                    ready, _, _ = select.select([self.source, self._wake_r], [], [], self._timeout())
                except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                    ready = []
                self._drain_wakeups()
                self._feed_watchdog()
                if self._stop:
                    break
                if self._reload:
                    self._reload_config()
                    continue
                due = self._collect() if self.source in ready else set()
                now = time.monotonic()
                for pf in due:
                    if self.not_before.get(pf, 0) > now:
                        self.pending.add(pf)  # backing off: the event waits for the next attempt
                due = {pf for pf in due if self.not_before.get(pf, 0) <= now}
                due |= {pf for pf in self.pending if self.not_before.get(pf, 0) <= now}
                self.pending -= due
                if due and not self._stop:
                    self.run_once(frozenset(due))
        finally:
            self.notifier.stopping()
            self.log.info("stopping")
            if self.source is not None:
                self.source.close()
            signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError as exc:  # pragma: no cover
                    if exc.errno != errno.EBADF:
                        raise
        return 0

