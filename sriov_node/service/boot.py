"""`sriov-node boot`: the boot-time oneshot. Converge each configured PF as soon as it is ready.

At boot, PF drivers are loaded by udev as it works through the coldplug events: a PF can be
there without its driver (so no netdev, so a `name` selector matches nothing yet), and some
drivers come late. Waiting for udev to settle (systemd-udev-settle, deprecated) would make the
whole boot wait for the slowest device; instead:

    loop until every block is applied, or the wait is over:
        one run (reconcile) whose own survey observes the PFs, resolves, and picks every PF that
            is present and has its driver, and was not run yet: those are run now; the rest of
            that survey (`Report.resolved`) says what is still awaited
        wait for a uevent (or a short poll when no uevent source can be opened)

A PF that never shows up is reported when the wait ends, and the others have converged long
before. Boot never blocks beyond --wait (plus the engine's own bounded waits).
"""

from __future__ import annotations

import logging
import select
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from sriov_node.engine.outcome import INTERRUPTED, Outcome, exit_code, recorded, verdict
from sriov_node.errors import EXIT_INVALID, SriovNodeError
from sriov_node.host import Host
from sriov_node.service.journal import fields
from sriov_node.model import DesiredState
from sriov_node.engine.reconcile import PfOutcome, reconcile
from sriov_node.engine.resolve import ABSENT, NOT_A_PF, Resolution
from sriov_node.service.uevents import UeventSource, open_source

POLL = 0.25  # seconds between looks when no uevent source could be opened


def _never() -> bool:
    return False


@dataclass
class BootReport:
    outcomes: Dict[str, PfOutcome] = field(default_factory=dict)  # PF -> its (last) outcome
    missing: List[str] = field(default_factory=list)  # what was still not there when the wait ended
    waited: float = 0.0
    interrupted: bool = False
    generation: Optional[object] = None  # the generation recorded (generations.Generation), if any

    @property
    def verdict(self) -> Outcome:
        """A PF that never came fails the boot run as a failed PF does."""
        return verdict((o.status for o in self.outcomes.values()), interrupted=self.interrupted,
                       missing=bool(self.missing))

    @property
    def exit_code(self) -> int:
        return exit_code(self.verdict)

    def to_dict(self) -> Dict[str, object]:
        return {"pfs": [o.to_dict() for o in self.outcomes.values()], "missing": self.missing,
                "generation": getattr(self.generation, "number", None),
                "waited_seconds": round(self.waited, 2), "interrupted": self.interrupted, "exit_code": self.exit_code}


def _ready(done: Set[str]) -> Callable[[Resolution], FrozenSet[str]]:
    """What a run picks from its own survey: every target PF present with its driver, not run yet."""
    def pick(resolution: Resolution) -> FrozenSet[str]:
        return frozenset(t.pf.pci for t in resolution.targets if t.pf.pci not in done and t.pf.driver is not None)
    return pick


def _waiting(resolution: Optional[Resolution], done: Set[str]) -> List[Tuple[str, str]]:
    """What is still awaited, [(pci or block, why)], from a run's survey (`Report.resolved`): the
    blocks' PFs that have no driver yet, and the blocks that select no PF (yet)."""
    if resolution is None:
        return []
    waiting = [(t.pf.pci, f"{t.spec.key}: {t.pf.pci} has no driver bound yet")
               for t in resolution.targets if t.pf.pci not in done and t.pf.driver is None]
    waiting += [(f.key, f.render()) for f in resolution.failures if f.kind in (ABSENT, NOT_A_PF)]
    return waiting


def boot(host: Host, desired: DesiredState, *, wait: float, timeout: float, log: logging.Logger,
         cancelled: Callable[[], bool] = _never, source: Optional[UeventSource] = None,
         progress: Optional[Callable[..., None]] = None, change: Optional[object] = None) -> BootReport:
    """`change` (a generations.Change): its runs, so that what the applied generation set and `desired`
    leaves is put back, and one record follows them."""
    report = BootReport()
    start = time.monotonic()
    deadline = start + wait
    if source is None:
        try:
            source = open_source(host)
        except (OSError, ImportError) as exc:
            log.info("no uevent source (%s): looking again every %.2f s", exc, POLL)
    done: Set[str] = set()
    told = 0.0
    try:
        while True:
            # one survey a round: the run's own, which picks what is ready (none: it runs nothing)
            if change is not None:
                change.progress = progress  # type: ignore[attr-defined]
                run = change.run(only=_ready(done))  # type: ignore[attr-defined]
            else:
                run = reconcile(host, desired, only=_ready(done), timeout=timeout, cancelled=cancelled,
                                progress=progress)
            ran = {o.pci for o in run.outcomes if o.pci is not None}
            done |= ran  # one run each; the daemon reacts to what happens later
            waiting = _waiting(run.resolved, done)
            if run.outcomes:
                for o in run.outcomes:
                    if o.pci is None:
                        continue
                    report.outcomes[o.pci] = o
                    done.add(o.pci)
                    if o.converged:
                        log.info("%s (%s): %s, %d write(s)", o.pci, o.key, o.status, o.writes, extra=fields(o.pci))
                    else:
                        for line in (o.error or o.status).splitlines():
                            log.error(line, extra=fields(o.pci))
                if run.interrupted:
                    report.interrupted = True
                    break
                if waiting:
                    continue  # look again at once: running took time, others may be ready now
            now = time.monotonic()
            if not waiting or now >= deadline or cancelled():
                report.missing = [why for _, why in waiting]
                report.interrupted = report.interrupted or cancelled()
                break
            if now - told >= 5 or told == 0:
                told = now
                log.info("waiting %.0f s more for: %s", deadline - now, "; ".join(why for _, why in waiting))
            left = min(deadline - now, 1.0 if source is not None else POLL)
            if source is not None:
                readable, _, _ = select.select([source], [], [], left)
                if readable:
                    for _ in source.drain():
                        pass  # any event: look again (resolution decides what it means)
            else:
                time.sleep(left)
    finally:
        if source is not None:
            source.close()
    report.waited = time.monotonic() - start
    for why in report.missing:
        log.error("gave up after %.0f s: %s", wait, why)
    return report


def run_boot(host: Host, config: str, *, wait: float, timeout: float, log: logging.Logger,
             cancelled: Callable[[], bool] = _never, as_json: bool = False) -> "tuple[int, Optional[BootReport]]":
    from sriov_node.views.progress import terminal_progress
    from sriov_node.engine.survey import load_desired

    from sriov_node import generations

    try:
        expired = generations.pending_checkpoint(host)
    except SriovNodeError:
        expired = None
    restored = _expire_checkpoint_at_boot(host, config, log, timeout)
    invalid = 0
    try:
        desired = generations.desired_of(restored, config) if restored else load_desired(host, config)
    except SriovNodeError as exc:
        for line in str(exc).splitlines():
            log.error(line)
        # An invalid (or missing) file keeps the applied generation, as a reload does: the node still
        # comes up as it was, and the unit fails visibly all the same.
        try:
            fallback = generations.current(host)
            desired = generations.desired_of(fallback, config) if fallback is not None else None
        except SriovNodeError as why:
            log.error("the applied generation cannot be used either: %s", why)
            desired = None
        if desired is None:
            return exc.exit_code or EXIT_INVALID, None
        log.error("%s cannot be used: converging to the applied generation %d instead", config, fallback.number)
        invalid = exc.exit_code or EXIT_INVALID
    try:
        now = expired if restored is not None else generations.current(host)
    except SriovNodeError as exc:
        log.error("the applied generation cannot be read: %s; nothing is converged on a guess", exc)
        return 1, None
    change = generations.Change(host, desired, now, command="boot", timeout=timeout, cancelled=cancelled,
                                restored_from=restored.number if restored is not None else None,
                                ends_checkpoint=generations.EXPIRED)
    with terminal_progress(host, desired, as_json=as_json) as progress:  # only when run by hand, on a terminal
        report = boot(host, desired, wait=wait, timeout=timeout, log=log, cancelled=cancelled, progress=progress,
                      change=change)
    report.generation = _record_boot(host, desired, report, log, timeout,
                                     restored.number if restored is not None else None, change)
    return invalid or report.exit_code, report


def _expire_checkpoint_at_boot(host: Host, config: str, log: logging.Logger, timeout: float):
    """An uncommitted checkpoint did not survive the reboot: mark it expired and put its previous
    generation's bytes back in the config file. That previous generation (boot converges to it,
    even if the file cannot be written), or None."""
    from sriov_node import generations
    from sriov_node.atomic import OutputError, write_config
    from sriov_node.engine.state import ApplyLock

    try:
        host.check_writable()
        with ApplyLock(host, timeout):
            gen = generations.pending_checkpoint(host)
            if gen is None:
                return None
            previous = generations.get(host, gen.checkpoint["previous"])
            log.warning("generation %d is a checkpoint that was not committed before the reboot: restoring "
                        "generation %d", gen.number, previous.number)
            generations.mark_checkpoint(host, gen, generations.EXPIRED, by="boot")
            try:
                saved = generations.save_unapplied(config, gen, previous.config)
            except generations.GenerationError as exc:
                log.error("%s", exc)
                return previous
            if saved:
                log.warning("%s held an edit that was never applied: kept as %s", config, saved)
            try:
                notice = write_config(config, previous.config)[1]
                if notice:
                    log.warning("%s", notice)
            except OutputError as exc:
                log.error("generation %d is restored on the host, but not in the file: %s", previous.number, exc)
            return previous
    except SriovNodeError as exc:
        log.error("the pending checkpoint could not be rolled back: %s", exc)
        return None


def _record_boot(host: Host, desired: DesiredState, report: BootReport, log: logging.Logger, timeout: float,
                 restored: Optional[int], change: Optional[object] = None):
    """Record the generation boot converged toward (as apply does); a failure to record is logged."""
    from sriov_node import generations
    from sriov_node.engine.state import ApplyLock

    statuses = [o.status for o in report.outcomes.values()]
    writes = sum(o.writes for o in report.outcomes.values())
    # a PF interrupted in one of boot's runs makes the boot interrupted, whatever came after it
    result = verdict(statuses, interrupted=report.interrupted or INTERRUPTED in statuses, missing=bool(report.missing))
    # refused before writing: nothing moved toward this config (after an expired checkpoint, the
    # restored config is recorded all the same: the checkpoint's must not stay the desired state)
    outcome = recorded(result, writes if restored is None else 1)
    if outcome is None:
        return None
    try:
        with ApplyLock(host, timeout):
            now = generations.current(host)
            pfs = {pci: {"name": o.name, "block": o.key, "status": o.status, "error": o.error,
                         "findings": [f.get("text") for f in o.findings]} for pci, o in report.outcomes.items()}
            if restored is None and generations.reruns(now, desired, outcome, writes):
                assert now is not None  # the same config, converged again or nothing written: no new generation
                return generations.rerun(host, now, outcome, pfs)
            if change is not None and change.reports:  # type: ignore[attr-defined]
                gen = change.record(outcome=outcome, pfs=pfs)  # type: ignore[attr-defined]
                if gen is None:
                    log.error("the boot run was not recorded as a generation: %s",
                              change.reports[-1].unrecorded)  # type: ignore[attr-defined]
                    return None
                if now is not None and gen.number == now.number:
                    return now
            else:
                gen = generations.record(host, desired.raw, desired.source, command="boot", outcome=outcome, pfs=pfs,
                                         restored_from=restored, ends_checkpoint=generations.EXPIRED)
    except SriovNodeError as exc:
        log.error("the boot run was not recorded as a generation: %s", exc)
        return None
    log.info("generation %d recorded (%s)", gen.number, outcome)
    return gen
