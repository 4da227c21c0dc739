"""`sriov-node daemon`: keep the node converged to the applied generation as uevents say something moved.

    start:  desired = the newest applied generation (generations.current); without any, the
            config file (its run is recorded as generation "daemon-start"); converge every PF;
            write run/sriov-node/agent.pid; READY=1
    loop:   sleep in select() on the uevent sources, the generations directory (inotify) and the
            signal pipe; the timeout is the next deadline (a back-off, a pending checkpoint, the
            watchdog), or none: idle = zero wake-ups
            event(s)       -> the PFs they touch, after a quiet period that ends the burst
                              -> reconcile(only=those PFs)
            link event     -> (rtnetlink's RTM_NEWLINK: a VF setting or an MTU set by hand sends
                              no uevent) its PF, when it no longer reads as the last run read it
            events lost    -> (ENOBUFS: a uevent socket overran) reconcile every PF
            new generation -> (apply, set, rollback... recorded it) converge to it at once
            checkpoint     -> its deadline passed uncommitted: generations.expire_checkpoint
                              restores the previous generation (file and host)
            SIGHUP         -> apply the config file now: valid, it converges and is recorded as a
                              generation ("reload"); invalid, the current generation is kept and
                              the journal, STATUS= and the metrics say so
            SIGTERM        -> stop between two actions; STOPPING=1; agent.pid removed

The daemon never applies the config file on its own: an edited file waits for `sriov-node
apply` (or a reload). Each run takes the engine's machine-wide lock and, holding it, re-reads the
newest generation: a manual apply/set that converged the host while the daemon waited is never
undone. Events whose SEQNUM the last read of their PF already covers are dropped: the echoes of
its own writes never start another round. A PF that keeps failing is retried with an exponential
back-off, not on every event; a PF whose driver is gone waits for its bind event.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from typing import Any, Dict, FrozenSet, List, Optional, Set

from sriov_node.engine.outcome import pf_converged
from sriov_node.errors import LockTimeout, SriovNodeError
from sriov_node.host import Host
from sriov_node.host.paths import CLASS_NET
from sriov_node.service.journal import Notifier, fields
from sriov_node.model import DesiredState
from sriov_node.engine.reconcile import Report, load_desired, reconcile
from sriov_node.engine.state import ApplyLock
from sriov_node.service.uevents import BUSES, DirectoryWatch, LinkSource, Uevent, UeventSource, open_sources, route

BACKOFF_FIRST, BACKOFF_MAX = 2.0, 300.0
# The quiet period that ends a burst of uevents: at most --debounce; once the burst's own rhythm is
# known, a few of its gaps (at least QUIET_FLOOR); after the event that ends a kernel operation (a
# PF's bind: its driver has probed; a PF's change: its sriov_numvfs write is done), none: what has
# arrived already is read, and the run starts (an event after its read of the kernel's SEQNUM
# starts another run if it moved the PF; one before is covered by it).
QUIET_FLOOR, QUIET_GAPS = 0.005, 4.0


def pid_path(host: Host) -> str:
    return host.path(*_generations().AGENT_PID)


def _generations():  # imported when used: the module is the store of applied generations
    from sriov_node import generations

    return generations


# What a run that changes something needs beyond a converged run's survey: loaded once the daemon is
# ready (its start stays as fast as a converged run), not in the first reaction to a PF driver reload.
REACTION_MODULES = ("sriov_node.engine.plan", "sriov_node.engine.preflight", "sriov_node.engine.execute",
                    "sriov_node.engine.actions", "sriov_node.engine.preimages")


def _warm() -> None:
    for name in REACTION_MODULES:
        __import__(name)  # the import statement's own path (what -X importtime reports)


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
        self.generation: Optional[int] = None  # the applied generation `desired` comes from (None: the file)
        self.config_valid = True  # False after a reload found the file invalid, until a generation is taken
        self.unreadable: Optional[str] = None  # why the newest generation record cannot be read, if it cannot
        self.followed: Any = None  # the generations.Generation followed (None: none yet)
        self.checkpoint: Optional["tuple[int, float]"] = None  # a pending checkpoint: (generation, wall-clock deadline)
        self._expiry_tried: Set[int] = set()  # checkpoints whose restore failed: not retried in a loop
        self.sources: List[UeventSource] = []
        self.watch: Optional[DirectoryWatch] = None
        self._read_since_drain = False  # the generations were read after the watch's last drain
        self.covered: Dict[str, int] = {}  # PF -> SEQNUM its last read reflects
        self.known_vfs: Dict[str, str] = {}  # VF -> PF, for VFs that are gone when their event arrives
        # PF -> (its netdev, its VFs' settings, its MTU) as the last run read them back: what a link
        # event (rtnetlink names the netdev, not the change) is compared with (`_link_moved`)
        self.links_read: Dict[str, "tuple[Optional[str], Dict[int, Any], Optional[int]]"] = {}
        self.failures: Dict[str, int] = {}  # PF -> consecutive failed runs
        self.not_before: Dict[str, float] = {}  # PF -> no new attempt before (back-off)
        self.pending: Set[str] = set()  # PFs waiting for their back-off to end
        self.outcomes: Dict[str, str] = {}  # PF -> last status, for STATUS=
        self.runs = 0
        self._recorded: Optional[int] = None  # the generation the last run recorded (or re-ran), if any
        self._burst = ""  # how the last burst of uevents ended, for the run's log line
        self._stop = False
        self._reload = False
        self._wake_r, self._wake_w = -1, -1
        self._next_watchdog: Optional[float] = None
        self._metrics_path: Optional[str] = None  # the last [metrics] textfile, kept through an invalid reload
        # what the metrics last said, toward which desired state (its digest): a per-PF run updates its PFs
        self._metrics: Optional["tuple[str, Any]"] = None

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

    # ------------------------------------------------------------------ status

    def summary(self) -> str:
        if not self.outcomes:
            text = "no configured PF present"
        else:
            good = [pf for pf, st in self.outcomes.items() if pf_converged(st)]
            bad = sorted(pf for pf in self.outcomes if pf not in good)
            text = f"{len(good)} of {len(self.outcomes)} PF(s) converged"
            text += f"; not converged: {', '.join(bad)}" if bad else ""
        text += f" (generation {self.generation})" if self.generation is not None else " (the config file: no generation)"
        if not self.config_valid:
            text += f"; reload refused: {os.path.basename(self.config)} is invalid, the applied configuration is kept"
        return text

    # ------------------------------------------------------------------ generations

    def _unchanged(self) -> bool:
        """The generations directory has not changed since the last read of it (made after the watch's
        last drain): its inotify watch holds no event. Then the newest generation is the one followed."""
        if self.watch is None or not self.watch.armed or not self._read_since_drain or self.unreadable is not None:
            return False
        ready, _, _ = select.select([self.watch], [], [], 0)
        return not ready

    def _follow(self) -> bool:
        """Take the newest applied generation, if it is not the one followed: True when the desired
        state changed (its bytes differ), so every PF must be looked at again."""
        if self._unchanged():
            return False
        self._read_since_drain = self.watch is not None
        try:
            gen = _generations().current(self.host)
        except (SriovNodeError, OSError) as exc:
            self.unreadable = str(exc)
            self.log.error("the applied generations cannot be read: %s; keeping generation %s", exc,
                           self.generation if self.generation is not None else "none (nothing is converged)")
            self.notifier.status(f"the applied generation cannot be read: {exc}")
            return False
        self.unreadable = None
        self.followed = gen
        if gen is None or gen.number == self.generation:
            return False
        try:
            desired = _generations().desired_of(gen)
        except SriovNodeError as exc:
            self.log.error("generation %d cannot be used: %s; keeping %s", gen.number, exc,
                           self.generation if self.generation is not None else "the config file")
            self.generation = gen.number  # not retried on every event
            return False
        changed = self.desired is None or desired.digest != self.desired.digest
        self.log.info("following generation %d (%s by `%s`, %s)%s", gen.number, gen.outcome, gen.command,
                      gen.sha256[:12], "" if changed else ": the same configuration")
        self.generation, self.desired, self.config_valid = gen.number, desired, True
        if changed:
            self.pending.clear()
            self.failures.clear()
            self.not_before.clear()
            self.outcomes.clear()
        return changed

    def _arm_checkpoint(self) -> None:
        """The pending checkpoint's deadline becomes a select() timeout (no polling)."""
        try:
            gen = _generations().pending_checkpoint(self.host)
        except (SriovNodeError, OSError) as exc:
            self.log.error("the pending checkpoint cannot be read: %s", exc)
            gen = None
        if gen is None or gen.number in self._expiry_tried:
            if self.checkpoint is not None and gen is None:
                self.log.info("checkpoint of generation %d: no longer pending", self.checkpoint[0])
            self.checkpoint = None
            return
        deadline = float(gen.checkpoint["deadline"])
        if self.checkpoint != (gen.number, deadline):
            self.log.info("checkpoint of generation %d: restoring generation %s in %.0f s unless `sriov-node commit` "
                          "runs first", gen.number, gen.checkpoint.get("previous"), max(0.0, deadline - time.time()))
        self.checkpoint = (gen.number, deadline)

    def _expire_checkpoint(self) -> None:
        assert self.checkpoint is not None
        number = self.checkpoint[0]
        self.checkpoint = None
        self.log.warning("checkpoint of generation %d: not committed before its deadline; restoring the previous "
                         "generation (file and host)", number)
        try:
            result = _generations().expire_checkpoint(self.host, number, timeout=self.timeout,
                                                      cancelled=self._cancelled)
        except LockTimeout as exc:  # a long manual run holds the lock: try again shortly
            self.checkpoint = (number, time.time() + BACKOFF_FIRST)
            self.log.warning("checkpoint of generation %d: not restored yet: %s; trying again in %.0f s", number, exc,
                             BACKOFF_FIRST)
            return
        except SriovNodeError as exc:
            self._expiry_tried.add(number)  # not retried in a loop; a new generation re-arms
            for line in str(exc).splitlines():
                self.log.error("checkpoint of generation %d: not restored: %s", number, line)
            self.notifier.status(f"{self.summary()}; checkpoint {number} expired but was not restored")
            return
        if result is None:
            self.log.info("checkpoint of generation %d: committed or replaced meanwhile; nothing to restore", number)
        elif result.generation is None:
            self._expiry_tried.add(number)
            self.log.error("checkpoint of generation %d: expired, but restoring generation %d was %s; its "
                           "configuration stays", number, result.target.number, result.result)
            for o in result.outcomes:
                for line in (o.error or "").splitlines():
                    self.log.error(line, extra=fields(o.pci))
        else:
            self.log.warning("checkpoint of generation %d: expired; generation %d restored as generation %d (%s)%s",
                             number, result.target.number, result.generation.number, result.result,
                             f", {result.config_path} rewritten" if result.config_path else "")
        for notice in result.notices if result is not None else ():
            self.log.warning("checkpoint of generation %d: %s", number, notice)
        self._new_generations()

    def _new_generations(self) -> None:
        """The generations directory changed (or we changed it): follow the newest, converge to it."""
        if self._follow():
            self.run_once(None)
            self.notifier.status(self.summary())
        self._arm_checkpoint()

    def _record(self, command: str, report: Report) -> None:
        """Record the run toward self.desired as a generation (under the lock, after the run), unless
        it was refused before writing anything (or re-ran the current generation's exact bytes)."""
        assert self.desired is not None
        gen = _generations().record_report(self.host, self.desired, report, command=command, now=self.followed)
        for notice in report.notices:
            self.log.warning("%s: %s", command, notice)
        if gen is None:
            return
        self._recorded = gen.number
        if gen.number != self.generation:
            self.log.info("recorded generation %d (%s, %s)", gen.number, command, gen.outcome)
        self.generation = gen.number

    # ------------------------------------------------------------------ runs

    def run_once(self, only: Optional[FrozenSet[str]], record: Optional[str] = None) -> Optional[Report]:
        """One engine run (all PFs, or `only`) under the apply lock; records what the event routing
        and back-off need. Holding the lock it first takes any newer generation (so a run that
        waited for a manual apply converges to what that apply recorded), unless `record`: then
        self.desired is the config file, applied now and recorded as a generation by that command."""
        assert self.desired is not None
        self.runs += 1
        self._recorded = None
        try:
            with ApplyLock(self.host, self.timeout, self._cancelled):
                if record is None and self._follow():
                    only = None  # the new generation may change any PF
                report = reconcile(self.host, self.desired, only=only, timeout=self.timeout,
                                   cancelled=self._cancelled,
                                   # as apply does: what the followed generation still has to put back,
                                   # and on a reload of another config what it set and that one drops
                                   restore=_generations().undo_values(self.followed, self.desired) or None,
                                   # an event's run is recorded nowhere: what it found before writing is unused
                                   preimages=record is not None)
                if record is not None:
                    self._record(record, report)
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
        if report.device_plugin:  # [device_plugin] config_file, written by the run once the node converged
            self.log.info("%s", report.device_plugin)
        self._write_metrics(self.desired, report, only)
        scope = "every PF" if only is None else "only " + ",".join(sorted(only))
        if self._burst and only is not None:
            scope += f" ({self._burst})"
        self._burst = ""
        self.log.info("run %d: %s: %s (%.0f ms)", self.runs, scope,
                      ", ".join(f"{o.pci or o.key} {o.status}" for o in report.outcomes) or "nothing selected",
                      report.duration * 1000)
        self.notifier.status(self.summary())
        return report

    def _write_metrics(self, desired: Optional[DesiredState], report: Optional[Report] = None,
                       only: Optional[FrozenSet[str]] = None) -> None:
        """Refresh [metrics] textfile (node_exporter's textfile collector) when the config asks for one.

        After a run of some PFs (`only`), their values come from the run's report and the other
        PFs' from the metrics written before (toward the same desired state): nothing of the
        other PFs is read again. Otherwise every PF is surveyed."""
        from sriov_node.views.metrics import after_run, survey_values, textfile_path, write_textfile

        path = textfile_path(self.host, desired) or self._metrics_path
        if path is None:
            return
        self._metrics_path = path
        kept = self._metrics
        values = None
        if report is not None and only is not None and desired is not None and kept is not None \
                and kept[0] == desired.digest:
            values = after_run(kept[1], self.host, desired, report, only)
        if values is None and report is not None and report.view is not None:
            from sriov_node.views.metrics import values_of

            values = values_of(report.view, desired is not None)  # the whole host, as the run read it back
        if values is None:
            values = survey_values(self.host, desired)
        self._metrics = (desired.digest, values) if desired is not None else None
        try:
            write_textfile(self.host, desired, path, config_valid=self.config_valid, values=values,
                           config_file=self.config)
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
        """Each VF's PF, from the run's read-back (a VF's later uevent may come when it is gone)."""
        for pci, state in report.states.items():
            self.links_read[pci] = (state.name, {vf.index: vf.links for vf in state.vfs if vf.links is not None},
                                    state.mtu)
            if state.bus != "pci":
                continue
            for vf in state.vfs:
                if vf.pci:
                    self.known_vfs[vf.pci] = pci

    def _link_moved(self, pf: str) -> bool:
        """A link event named PF `pf`'s netdev: did what the last run read back of it (its VFs'
        settings, its MTU) move since? The run's own settings send these events too, and they find
        it as the run left it. A change by hand (`ip link set PF vf N ...`) does not. Nothing read
        back (no run has taken the PF; nothing of it is managed): nothing to compare, not moved."""
        seen = self.links_read.get(pf)
        if seen is None:
            return False
        name, links, mtu = seen
        if name is None:
            return True  # its netdev was gone: look again
        try:
            if links and self.host.links.vf_links(name) != links:
                return True
        except OSError:
            return True  # cannot read them now: look again (the run says why)
        return mtu is not None and self.host.sysfs.read_int(CLASS_NET, name, "mtu") != mtu

    def _route(self, events: List[Uevent], due_already: FrozenSet[str] = frozenset()) -> Set[str]:
        """The PFs these events call for: a uevent's PF (unless the last run's read covers it); a link
        event's PF only when its state moved since that read (each PF asked once, none already due)."""
        links = [e for e in events if e.action == LinkSource.ACTION]
        due = route([e for e in events if e.action != LinkSource.ACTION], self.host, self.known_vfs, self.covered)
        asked = route(links, self.host, self.known_vfs, {}) - due - due_already
        return due | {pf for pf in asked if self._link_moved(pf)}

    # ------------------------------------------------------------------ loop

    def _ends_an_operation(self, events: List[Uevent]) -> bool:
        """A PF's bind (its driver has probed) or change (its sriov_numvfs write is done): what
        follows the burst's last event, so the quiet period can end now."""
        for e in events:
            if e.subsystem in BUSES and e.action in ("bind", "change") and e.device \
                    and self.host.sysfs.is_sriov_pf(e.device):
                return True
        return False

    def _drain(self, ready: List[Any]) -> List[Uevent]:
        return [e for src in self.sources if src in ready for e in src.drain()]

    def _lost(self) -> int:
        """Overruns the sources counted since the last run of every PF."""
        return sum(src.lost for src in self.sources)

    def _collect(self, ready: List[Any]) -> Set[str]:
        """Route the waiting events, then keep listening until the burst is over (a 64-VF burst is
        one run). The quiet period adapts: --debounce until the burst shows its rhythm, then
        QUIET_GAPS times its longest gap (at least QUIET_FLOOR); none once the event that ends a
        kernel operation has come (the events already waiting are read, without waiting for more)."""
        self._burst = ""
        events = self._drain(ready)
        due = self._route(events)
        if not due and not self._lost():
            return due
        now = time.monotonic()
        start, end, last, gap = now, now + self.max_delay, now, None
        final = self._ends_an_operation(events)
        count = len(events)
        while not self._stop:
            if final:
                quiet = 0.0  # only what is waiting already
            elif gap is None:
                quiet = self.debounce
            else:
                quiet = min(self.debounce, max(QUIET_FLOOR, QUIET_GAPS * gap))
            left = min(quiet, end - time.monotonic())
            if left < 0 or (left == 0 and not final):
                break
            ready, _, _ = select.select(self.sources, [], [], left)
            if not ready:
                break
            now = time.monotonic()
            gap, last = max(gap or 0.0, now - last), now
            events = self._drain(ready)
            count += len(events)
            final = final or self._ends_an_operation(events)
            due |= self._route(events, frozenset(due))
        self._burst = (f"{count} event(s) in {(time.monotonic() - start) * 1000:.0f} ms, "
                       + ("ended by a PF's bind or change" if final else "then quiet"))
        return due

    def _timeout(self) -> Optional[float]:
        now = time.monotonic()
        deadlines = [self.not_before.get(pf, now) for pf in self.pending]
        if self._next_watchdog is not None:
            deadlines.append(self._next_watchdog)
        if self.checkpoint is not None:  # a wall-clock deadline, re-read at every wake-up
            deadlines.append(now + self.checkpoint[1] - time.time())
        return None if not deadlines else max(0.0, min(deadlines) - now)

    def _reload_config(self) -> None:
        """SIGHUP: apply the config file now, as `sriov-node apply` would, and record it ("reload")."""
        self._reload = False
        self.notifier.reloading()
        try:
            desired = load_desired(self.host, self.config)
        except SriovNodeError as exc:
            for line in str(exc).splitlines():
                self.log.error("reload: %s", line)
            kept = f"generation {self.generation}" if self.generation is not None else "the configuration read at start"
            self.log.error("reload: the configuration is invalid; keeping %s", kept)
            self.config_valid = False
            self._write_metrics(self.desired)
            self.notifier.ready(self.summary())
            return
        previous, previous_generation = self.desired, self.generation
        self.desired, self.config_valid = desired, True
        self.log.info("reload: %s read (%s); converging every PF", self.config, desired.digest[:12])
        self.pending.clear()
        self.failures.clear()
        self.not_before.clear()
        self.outcomes.clear()
        report = self.run_once(None, record="reload")
        if self._recorded is None:
            # not recorded (refused before any write, or the lock not had): the applied generation stays
            self.log.warning("reload: %s was not applied (%s); still following %s", self.config,
                             report.result if report is not None else "the run was skipped",
                             f"generation {previous_generation}" if previous_generation is not None
                             else "the configuration read at start")
            self.desired = previous
            if report is not None:
                self.outcomes.clear()
                self.run_once(None)  # the host against what is still desired (nothing was written)
        self._arm_checkpoint()
        self.notifier.ready(self.summary())

    def _write_pid(self) -> None:
        from sriov_node.atomic import write_atomic

        path = pid_path(self.host)
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            write_atomic(path, f"{os.getpid()}\n".encode(), mode=0o644, follow=False)
        except (SriovNodeError, OSError) as exc:
            self.log.warning("%s not written: %s (`apply --checkpoint` will arm its own timer)", path, exc)

    def _remove_pid(self) -> None:
        path = pid_path(self.host)
        from sriov_node.files import read_regular

        try:
            mine = read_regular(path, limit=64, follow=False).strip() == str(os.getpid()).encode()
            if mine:
                os.unlink(path)
        except OSError:
            pass

    def _start(self) -> int:
        """The desired state at start: the newest generation, else the config file. 0 or an exit code.
        A newest record that cannot be read is never guessed past (neither an older one nor the file)."""
        self._follow()
        if self.unreadable is not None:
            self.log.error("not converging anything: the newest applied generation cannot be read (%s)",
                           self.unreadable)
            return 1
        if self.desired is not None:
            from sriov_node.files import CONFIG_LIMIT, read_regular

            try:
                on_disk: Optional[bytes] = read_regular(self.config, limit=CONFIG_LIMIT)
            except OSError:
                on_disk = None
            if on_disk is not None and on_disk != self.desired.raw:
                self.log.warning("%s differs from the applied generation %d: it is not applied until "
                                 "`sriov-node apply` (or `systemctl reload sriov-node-agent`)",
                                 self.config, self.generation)
            return 0
        try:
            self.desired = load_desired(self.host, self.config)
        except SriovNodeError as exc:
            for line in str(exc).splitlines():
                self.log.error(line)
            return exc.exit_code
        return 0

    def run(self) -> int:
        code = self._start()
        if code:
            return code
        try:
            self.sources = open_sources(self.host)
        except (OSError, ImportError) as exc:
            self.log.error("cannot listen to uevents: %s (pyudev needs a netlink socket: not in this container?); "
                           "the boot-time `sriov-node boot` still converges the node", exc)
            return 1
        try:
            self.watch = DirectoryWatch(_generations().directory(self.host))
        except OSError as exc:
            for src in self.sources:
                src.close()
            self.log.error("cannot watch the applied generations: %s", exc)
            return 1
        self._install_signals()
        self._write_pid()
        self.log.info("listening to %s; following %s", ", ".join(s.description for s in self.sources),
                      f"generation {self.generation}" if self.generation is not None else f"{self.config} (no generation yet)")
        try:
            self._feed_watchdog()
            self._arm_checkpoint()
            if self.checkpoint is not None and self.checkpoint[1] <= time.time():
                self._expire_checkpoint()  # its deadline passed while no daemon ran
            self.run_once(None, record="daemon-start" if self.generation is None else None)
            if not self._stop:
                self.notifier.ready(self.summary())
                self.log.info("ready: %s", self.summary())
                _warm()
            while not self._stop:
                try:
                    ready, _, _ = select.select(self.sources + [self.watch, self._wake_r], [], [], self._timeout())
                except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
                    ready = []
                self._drain_wakeups()
                self._feed_watchdog()
                if self._stop:
                    break
                if self._reload:
                    self._reload_config()
                    continue
                if self.watch in ready:
                    self._read_since_drain = False
                    self.watch.drain()
                    self._new_generations()
                if self.checkpoint is not None and self.checkpoint[1] <= time.time() and not self._stop:
                    self._expire_checkpoint()
                due = self._collect(ready) if any(src in ready for src in self.sources) else set()
                if self._lost() and not self._stop:
                    # what the lost events said is unknown: every PF is looked at again
                    self.log.warning("uevents were lost (the kernel's socket for them overran %d time(s)): "
                                     "converging every PF", self._lost())
                    for src in self.sources:
                        src.lost = 0
                    self.pending.clear()
                    self.run_once(None)
                    continue
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
            self._remove_pid()
            for src in self.sources:
                src.close()
            if self.watch is not None:
                self.watch.close()
            signal.set_wakeup_fd(-1)
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError as exc:  # pragma: no cover
                    if exc.errno != errno.EBADF:
                        raise
        return 0
