"""The engine: one reconcile for the CLI, the boot command and the daemon.

    lock; observe; resolve (targets, blocks that fail here); per PF: compare -> plan ->
    execute -> observe again -> compare; record the run

`reconcile(host, desired)` converges every configured PF; `only={pci, ...}` just those (a daemon
event). A PF is "converged" only when the comparison, run on a fresh read of the kernel, finds
nothing.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from sriov_node.engine.compare import Finding, beyond_reach
from sriov_node.engine.outcome import CHANGED, FAILED, INTERRUPTED, PLANNED, REFUSED, UNCHANGED, Outcome
from sriov_node.engine.outcome import exit_code as exit_code_of, pf_converged, verdict as verdict_of
from sriov_node.errors import EXIT_PF_FAILED, InUseError, StateError
from sriov_node.host import Host
from sriov_node.host.sysfs import DEFAULT_TIMEOUT
from sriov_node.model import DesiredState, HostState, PfState
from sriov_node.engine.resolve import BlockFailure, Resolution, Target
from sriov_node.engine.state import ApplyLock, record_run
from sriov_node.engine.survey import Judged, Only, Survey, config_path, judge, load_desired, observe_target, survey

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.engine.execute import Executor
    from sriov_node.engine.plan import PfPlan

# The writing side (plan, execute, holders, preflight) is imported when a PF has something to do:
# a converged host's run, at every boot and on every daemon event, never loads it.
__all__ = ["reconcile", "Report", "PfOutcome", "config_path", "load_desired", "survey", "observe_target"]

# PfOutcome.status and Report.result speak the one vocabulary of engine/outcome.py


def _never() -> bool:
    return False


@dataclass
class PfOutcome:
    """One PF's (or one unresolved block's) result of a run: its status, actions, findings and errors."""

    pci: Optional[str]  # None for a block that matched no PF
    name: Optional[str]
    key: str  # the config block, e.g. "pf[0]"
    status: Outcome
    actions: List[Dict[str, Any]] = field(default_factory=list)
    writes: int = 0
    error: Optional[str] = None  # what a person reads first
    errors: List[Dict[str, Any]] = field(default_factory=list)  # per PF/VF, with errno and fix
    findings: List[Dict[str, Any]] = field(default_factory=list)  # what still differs (or would change)
    detail: Optional[Dict[str, Any]] = None
    # The kernel's uevent sequence number just before this PF was last read: every uevent up to
    # it is reflected in the outcome (a daemon drops those, its own writes' echoes included).
    seqnum: Optional[int] = None
    # What could not be judged either way (a VF's driver when the kernel's default is not known
    # here): never a difference, never silently "converged" either
    unjudged: List[Dict[str, Any]] = field(default_factory=list)
    # VF settings that differ on a VF in use (its vfio group or uio device open, its netdev in a pod):
    # the holder's, left as they are (never a difference; the next run after the release sets them)
    held: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return pf_converged(self.status)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    """What a run did: one outcome per PF (and per block that resolved nowhere), notices, writes."""

    outcomes: List[PfOutcome]
    notices: List[str]
    writes: int
    dry_run: bool
    plans: Tuple["PfPlan", ...] = ()  # the PFs that had something to do
    interrupted: bool = False
    duration: float = 0.0
    device_plugin: Optional[str] = None  # what became of [device_plugin] config_file after the run, if anything
    # before the run, what each PF's block manages as the kernel showed it (engine/preimages.py
    # `found`), and the block each PF ran under as the config says it
    found: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    specs: Dict[str, Any] = field(default_factory=dict)
    restoring: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # what the run put back, per PF
    waiting: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # what it could not put back yet (survey)
    unrecorded: Optional[str] = None  # why the run's generation could not be recorded (the run then fails)
    # the whole host as the run left it, read back (the survey's judgement of each PF it did not
    # change, the verification's of each it changed; a dry run's: the survey): what the views build
    # from, without reading again. A per-PF run's: only when it writes the device plugin's file (its
    # survey then reads the other targets too); None when a PF left during the run.
    view: Optional["Survey"] = field(default=None, repr=False, compare=False)
    # every block resolved against the PFs as the run's survey read them (none of their VFs): which
    # PF each selects and its driver, the blocks that select none (boot's bookkeeping)
    resolved: Optional[Resolution] = field(default=None, repr=False, compare=False)
    # each PF the run looked at, as it left it (read back), per PCI address; a PF that left is absent
    states: Dict[str, PfState] = field(default_factory=dict, repr=False, compare=False)

    def plan_dict(self) -> Dict[str, Any]:
        return {"actions": [a for p in self.plans for a in p.action_dicts()],
                "on_failure": [a.to_dict() for p in self.plans for a in p.on_failure]}

    @property
    def verdict(self) -> Outcome:
        """What the run came to (a dry run: what the real run would come to)."""
        return verdict_of((o.status for o in self.outcomes), interrupted=self.interrupted)

    @property
    def exit_code(self) -> int:
        verdict = self.verdict
        if verdict == REFUSED and any(unsupported(o) for o in self.outcomes):
            return EXIT_PF_FAILED  # a step this host cannot do is an error in the file, not "in use, try later"
        code = exit_code_of(verdict)
        return EXIT_PF_FAILED if code == 0 and self.unrecorded else code

    def restored(self) -> Dict[str, Dict[str, Any]]:
        """What the run put back and read back: the values of the PFs that converged, but for the
        settings of a VF left to its holder (a VM's, a pod's: `held`), which were not put back."""
        from sriov_node.engine.preimages import held_keys, keys_of, pick

        done = {o.pci: o for o in self.outcomes if o.pci is not None and o.converged}
        out: Dict[str, Dict[str, Any]] = {}
        for pci, entry in self.restoring.items():
            if pci in done:
                keys = keys_of(entry) - held_keys(done[pci].held)
                if keys:
                    out[pci] = pick(entry, keys)
        return out

    def unrestored(self) -> Dict[str, Dict[str, Any]]:
        """What the run was to put back and did not read back (a PF refused or failed, a VF held):
        the generation keeps it for the next run."""
        from sriov_node.engine.preimages import keys_of, pick

        restored = self.restored()
        out: Dict[str, Dict[str, Any]] = {}
        for pci, entry in self.restoring.items():
            keys = keys_of(entry) - keys_of(restored.get(pci, {}))
            if keys:
                out[pci] = pick(entry, keys)
        return out

    @property
    def result(self) -> Outcome:
        result = self.verdict
        if self.dry_run and result == Outcome.CONVERGED and any(p.actions for p in self.plans):
            return PLANNED  # what the real run would do; its exit code is predicted by exit_code
        return result

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "result": self.result,
            "actions": self.plan_dict()["actions"],
            "on_failure": self.plan_dict()["on_failure"],
            "pfs": [o.to_dict() for o in self.outcomes],
            "notices": self.notices,
            "writes": self.writes,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "restoring": self.restoring,
            "restored": {} if self.dry_run else self.restored(),
            "unrecorded": self.unrecorded,
        }


def _failure_outcome(f: BlockFailure, heads: HostState, source: str) -> PfOutcome:
    pf = heads.pf(f.pf) if f.pf else None  # an address that is no PF here is named in the message only
    return PfOutcome(pf.pci if pf else None, pf.name if pf else None, f.key, FAILED, error=f"{source}: {f.render()}",
                     detail={"kind": f.kind, "key": f"{f.key}.{f.attr}" if f.attr else f.key})


def _finding_dicts(findings: Tuple[Finding, ...]) -> List[Dict[str, Any]]:
    return [f.to_dict() for f in findings]


# ---------------------------------------------------------------------------- the engine


def reconcile(
    host: Host,
    desired: DesiredState,
    *,
    only: Only = None,
    dry_run: bool = False,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    cancelled: Callable[[], bool] = _never,
    progress: Optional[Callable[..., None]] = None,
    restore: Optional[Dict[str, Dict[str, Any]]] = None,
    restore_all: bool = False,
    before_writes: Optional[Callable[[], None]] = None,
    preimages: bool = True,
) -> Report:
    """Converge the PFs `desired` selects (all, or those in `only`); never raises for a PF's failure.

    One route for both: survey, then per PF plan and judge it (refused, or nothing we may do);
    a dry run stops there, a real run executes the plan and verifies by reading the kernel again.

    `restore`: values to put back where no block manages them any more (see survey and
    engine/preimages.py). `before_writes`: called once, before the first write (a generation
    record's test write); its StateError stops the run there, nothing written, every PF failed.
    `preimages` False: the run is not recorded as a generation (a daemon's event run), so what it
    found before writing (`Report.found`) is not gathered, nor read from the VFs it creates.
    `only`: those PFs, and any other whose block is not the one the last run recorded for it
    (resolution is of the whole host: a PF that leaves or comes moves `index` rules to others).
    `only` may be a function that picks the PFs from the run's own survey (`survey.Only`: boot's
    "ready, not run yet"); when it picks none the run stops there: nothing recorded or written,
    the report has no outcomes, only `resolved` (what boot waits for).
    """
    start = time.monotonic()
    if not dry_run:
        host.check_writable()  # before the lock: a captured tree gets no run/ directory either
    with nullcontext() if dry_run else ApplyLock(host, timeout, cancelled):
        before = host.writes
        seqnum = None if dry_run else host.sysfs.uevent_seqnum()
        last_blocks = _last_blocks(host, desired) if only is not None else None
        # a per-PF run that writes the device plugin's file reads the other targets in its one survey
        # too: the file is of the whole node, and it is built from this run's reading of it
        seen = survey(host, desired, only, restore=restore, restore_all=restore_all, last_blocks=last_blocks,
                      whole=only is not None and not dry_run and desired.device_plugin_file is not None)
        heads, resolution = seen.heads, seen.resolution
        picking, only = callable(only), seen.only
        if picking and not resolution.targets and not resolution.failures:
            return Report([], list(resolution.notices), 0, dry_run, duration=time.monotonic() - start,
                          resolved=seen.resolved)
        found: Dict[str, Dict[str, Any]] = {}
        if preimages:
            from sriov_node.engine.preimages import found as found_of

            found = {j.target.pf.pci: found_of(seen.specs[j.target.pf.pci], j.target.pf)
                     for j in seen.judged if j.target.pf.pci in seen.specs}
        blocked: Optional[str] = None
        loaded = heads.pci_drivers
        executor: Optional[Executor] = None
        plans: List[PfPlan] = []
        outcomes: List[PfOutcome] = []
        notices = list(resolution.notices)
        interrupted = False
        verified: List[Optional[Judged]] = []  # each target as the run left it
        for judged in seen.judged:  # each target as the survey found it: compared once
            target = judged.target
            pf_plan = _plan(judged, loaded)
            outcome = _planned(target, pf_plan, seqnum)
            caveats: Tuple[Finding, ...] = ()
            held = judged.held
            if pf_plan is not None:
                plans.append(pf_plan)
            if pf_plan is None or outcome.status != PLANNED:
                caveats = judged.unjudged
            elif not dry_run and (interrupted or cancelled()):
                interrupted = True
                outcome = replace(outcome, status=INTERRUPTED,
                                  error=f"PF {pf_plan.pf}: not started: the run was interrupted")
            else:
                if progress and not dry_run:
                    progress(pf_plan.pf, f"{len(pf_plan.actions)} action(s)", pf_plan.target.spec)
                refused = _refuse_if_blocked(host, pf_plan, outcome, force, notices)
                if refused is not None or dry_run:  # a dry run: plan, judge, then stop
                    outcome = refused or _predicted(pf_plan, outcome)
                    caveats = judged.unjudged
                elif blocked is not None or not _may_write(before_writes, executor is None, outcome, notices):
                    blocked = blocked or outcome.error
                    outcome = replace(outcome, status=FAILED, error=f"PF {pf_plan.pf}: not started: {blocked}")
                else:
                    if executor is None:
                        from sriov_node.engine.execute import Executor

                        executor = Executor(host, timeout, cancelled, fresh=preimages)
                    outcome, caveats, held, judged = _run_pf(host, executor, pf_plan, outcome)
                    _add_fresh(found, pf_plan.pf, executor.fresh.get(pf_plan.pf))
                    interrupted = interrupted or outcome.status == INTERRUPTED
                    loaded = host.sysfs.pci_drivers()  # this PF's run may have loaded a driver
            _note_unjudged(outcome, caveats, notices)
            _note_held(outcome, held, notices)
            outcomes.append(outcome)
            verified.append(judged)
        outcomes += [_failure_outcome(f, heads, desired.source) for f in resolution.failures]
        report = Report(outcomes, notices, host.writes - before, dry_run, tuple(plans),
                        interrupted=interrupted, duration=time.monotonic() - start, found=found,
                        specs=dict(seen.specs), restoring=dict(seen.restoring), unrecorded=blocked,
                        waiting=dict(seen.waiting), resolved=seen.resolved)
        if dry_run:
            if only is None:
                report.view = seen  # nothing written: the host as the survey found it
            return report
        report.states = {v.target.pf.pci: v.target.pf for v in verified if v is not None}
        report.view = _view(host, seen, verified, only)
        _record(host, desired, report, only)
        if desired.device_plugin_file is not None and not interrupted:
            if report.view is not None:
                _write_device_plugin_config(host, desired, report)
            elif only is None:  # a PF left during the run: no reading of the node as the run left it
                report.device_plugin = (f"device plugin config {desired.device_plugin_file} not written: a PF left "
                                        "during the run; the next run that reads the node back converged writes it")
                report.notices.append(report.device_plugin)
        return report


def _view(host: Host, seen: Survey, verified: List[Optional[Judged]],
          only: Optional[FrozenSet[str]]) -> Optional[Survey]:
    """The whole host as the run left it: each PF it ran as its verification judged it, every other
    target as the run's survey read it (a per-PF run: only when that survey read them, `whole`).
    None when a PF left during the run, or a per-PF run read nothing beside its own PFs."""
    everything = seen.resolution if only is None else seen.whole
    if everything is None or any(v is None for v in verified):
        return None
    mine = {v.target.pf.pci: v for v in verified if v is not None}
    judged = tuple(mine.get(t.pf.pci) or judge(host, t) for t in everything.targets)
    states = {j.target.pf.pci: j.target.pf for j in judged}
    left = replace(seen.heads, pfs=tuple(states.get(pf.pci, pf) for pf in seen.heads.pfs))
    return Survey(left, Resolution(tuple(j.target for j in judged), everything.failures, everything.notices),
                  host=host, _judged=[judged])


def _add_fresh(found: Dict[str, Dict[str, Any]], pf: str, fresh: Optional[Dict[str, Dict[str, Any]]]) -> None:
    """Into what the run found on `pf`: the values the kernel gave the VFs this run created, for
    the keys the run then set (a VF that did not exist before the run has no other pre-image)."""
    if not fresh or pf not in found:
        return
    vfs = found[pf].setdefault("vfs", {})
    for index, values in fresh.items():
        mine = vfs.setdefault(index, {})
        for key, value in values.items():
            mine.setdefault(key, value)


def _may_write(before_writes: Optional[Callable[[], None]], first: bool, outcome: PfOutcome,
               notices: List[str]) -> bool:
    """Before the first write of the run: the caller's check (a record that can be written). False,
    with the reason in `outcome.error`, stops every write of the run."""
    if before_writes is None or not first:
        return True
    try:
        before_writes()
    except StateError as exc:
        outcome.error = str(exc)
        notices.append(f"nothing was written: {exc}")
        return False
    return True


def _last_blocks(host: Host, desired: DesiredState) -> Optional[Dict[str, str]]:
    """The block each PF ran under in the last recorded run, when `index` rules make it matter."""
    from sriov_node.engine.state import read_state

    if not any(s.selector.index is not None for s in desired.pfs):
        return None
    try:
        last = (read_state(host) or {}).get("pfs") or {}
    except StateError:
        return None
    if not isinstance(last, dict):
        return None
    return {pci: str(pf.get("block")) for pci, pf in last.items() if isinstance(pf, dict)}


def _plan(judged: Judged, loaded: FrozenSet[str]) -> Optional[PfPlan]:
    """The PF's plan from the survey's findings, or None when there are none (the planner is not even loaded)."""
    if judged.converged:
        return None
    from sriov_node.engine.plan import plan_pf

    return plan_pf(judged.target, loaded, findings=judged.findings)


def _planned(target: Target, pf_plan: Optional[PfPlan], seqnum: Optional[int]) -> PfOutcome:
    """The PF's outcome as planned: unchanged (nothing differs), failed (differences no action of
    ours can fix, as an externally managed count), or planned (actions to run)."""
    pf = target.pf
    if pf_plan is None:
        return PfOutcome(pf.pci, pf.name, target.spec.key, UNCHANGED, seqnum=seqnum)
    return PfOutcome(pf.pci, pf.name, target.spec.key, PLANNED if pf_plan.actions else FAILED,
                     pf_plan.action_dicts(), findings=_finding_dicts(pf_plan.findings),
                     error=None if pf_plan.actions else _unactionable(pf_plan.pf, pf_plan.findings), seqnum=seqnum)


def _predicted(pf_plan: PfPlan, outcome: PfOutcome) -> PfOutcome:
    """A dry run's outcome of a PF with actions to run: failed when a difference stays that none of
    them can fix (an externally managed count, a value the kernel cannot report back), as the real
    run, which runs them, then fails at its verification."""
    left = tuple(f for f in pf_plan.findings if beyond_reach(pf_plan.target.spec, f))
    return replace(outcome, status=FAILED, error=_unactionable(pf_plan.pf, left)) if left else outcome


def _unactionable(pf: str, findings: Tuple[Finding, ...]) -> str:
    return f"PF {pf}: differs, and sriov-node may not change it: " + "; ".join(f.describe() for f in findings)


UNSUPPORTED = "unsupported"  # a refused outcome's detail kind: a step this host is known to refuse


def unsupported(outcome: PfOutcome) -> bool:
    """A PF refused because its plan has a step this host cannot do (exit 1, not 3)."""
    return outcome.status == REFUSED and (outcome.detail or {}).get("kind") == UNSUPPORTED


def _refuse_if_blocked(host: Host, pf_plan: PfPlan, outcome: PfOutcome, force: bool,
                       notices: List[str]) -> Optional[PfOutcome]:
    """What refuses a PF's plan, judged the same for apply, --dry-run and validate: a step this host
    is known to refuse (the driver table and the host's answers: exit 1, the whole plan, before its
    first write), a platform prerequisite the plan needs is missing (vfio-pci without an IOMMU, exit 3),
    or (without --force) a VF the plan would take from its driver is in use (exit 3). Returns the
    refused outcome, or None. What the table does not know goes to `notices`."""
    from sriov_node.engine.preflight import capabilities, describe_refusals, preflight

    impossible, unknown = capabilities(host, pf_plan)
    notices += [f"PF {pf_plan.target.pf.label}: {note}" for note in unknown]
    if impossible:
        lines = describe_refusals(pf_plan, impossible)
        lines[-1] += "; nothing was written"
        return replace(outcome, status=REFUSED, error="\n".join(lines), findings=_finding_dicts(pf_plan.findings),
                       errors=[dict(r.to_dict(), pf=pf_plan.pf, attr=r.key, message=r.why, hint=r.fix)
                               for r in impossible],
                       detail={"kind": UNSUPPORTED, "refusals": [r.to_dict() for r in impossible]})

    blocked = preflight(host, pf_plan)
    if blocked is not None:
        return replace(outcome, status=REFUSED, error=f"PF {pf_plan.pf}: {blocked}",
                       findings=_finding_dicts(pf_plan.findings), detail={"check": blocked})
    disturbed = pf_plan.disturbed_vfs()
    if not disturbed or force:
        return None
    from sriov_node.host.holders import holders_by_vf
    from sriov_node.host.observe import observe_vf

    # who holds them is read now, for these VFs only (the comparison did not need it)
    held = holders_by_vf(host, [observe_vf(host, vf.index, vf.pci) for vf in disturbed])
    if not held:
        return None
    what = pf_plan.disturbances()
    pci = {vf.index: vf.pci for vf in disturbed}
    holders = [f"VF {i} ({pci[i]}) {what.get(i, 'would be unbound')}, but " + " and ".join(why)
               for i, why in sorted(held.items())]
    return replace(outcome, status=REFUSED, error=str(InUseError(pf_plan.pf, holders, pf_plan.disturbance_summary())),
                   detail={"holders": holders, "held_vfs": sorted(held)}, findings=_finding_dicts(pf_plan.findings))


def _note_unjudged(outcome: PfOutcome, caveats: Tuple[Finding, ...], notices: List[str]) -> None:
    """A PF with VFs that could not be judged says so, in its outcome and in the notices."""
    if not caveats:
        return
    outcome.unjudged = _finding_dicts(caveats)
    notices += [f"PF {outcome.pci}: not judged: {f.describe()}" for f in caveats]


def _note_held(outcome: PfOutcome, held: Tuple[Finding, ...], notices: List[str]) -> None:
    """A PF with VF settings left to the VFs' holders says so, naming them."""
    if not held:
        return
    outcome.held = _finding_dicts(held)
    by_vf: Dict[Optional[int], List[Finding]] = {}
    for f in held:
        by_vf.setdefault(f.vf, []).append(f)
    notices += [f"PF {outcome.pci}: VF {vf} is in use ({fs[0].held_by}): its settings are left to it: "
                + "; ".join(f.describe(where_too=False) for f in fs) for vf, fs in by_vf.items()]


def _run_pf(host: Host, executor: Executor, pf_plan: PfPlan,
            planned: PfOutcome) -> Tuple[PfOutcome, Tuple[Finding, ...], Tuple[Finding, ...], Optional[Judged]]:
    """Run one PF's plan and verify it: (its outcome, what the verification could not judge, the
    settings it found held, the verification's judgement: None when the PF left), judged as the
    survey judges."""
    before = host.writes
    result = executor.run(pf_plan)
    result.errors += executor.settle(pf_plan.pf)
    writes = host.writes - before
    gone = not host.sysfs.pf_exists(pf_plan.pf)
    seqnum = host.sysfs.uevent_seqnum()
    after: Tuple[Finding, ...] = ()
    caveats: Tuple[Finding, ...] = ()
    held: Tuple[Finding, ...] = ()
    again: Optional[Judged] = None
    if not gone:
        target = pf_plan.target
        again = judge(host, Target(target.spec, observe_target(host, target, known_vfs=executor.addresses(pf_plan.pf))))
        after, caveats, held = again.findings, again.unjudged, again.held
    lines = [str(e) for e in result.errors]
    explained = {e.vf for e in result.errors}
    if None in explained and result.errors:
        explained = None  # a PF-wide failure explains every remaining difference
    rest = [f for f in after if explained is not None and f.vf not in explained]
    beyond = tuple(f for f in rest if beyond_reach(pf_plan.target.spec, f) and not f.fix)
    if beyond:  # the run did what it could: what is left is not sriov-node's to change
        lines.append(_unactionable(pf_plan.pf, beyond))
        rest = [f for f in rest if f not in beyond]
    if rest:
        fixes = list(dict.fromkeys(f.fix for f in rest if f.fix))  # running again cannot help these
        lines.append(f"PF {pf_plan.pf}: read back differs from the desired state: "
                     + "; ".join(f.describe() for f in rest)
                     + (f". Fix: {'; '.join(fixes)}" if fixes else ". Fix: re-run sriov-node apply; if it persists, check dmesg"))
    lines += [f"PF {pf_plan.pf}: {note}" for note in result.cleanup_notes]
    if gone:  # nothing read back: never "changed"
        lines.append(f"PF {pf_plan.pf}: left during the run (removed or unplugged) before it could be read back: "
                     "nothing of it is verified. Fix: once it is back (a bus rescan, or a reboot), the daemon's "
                     "run or sriov-node apply configures it")
    if result.interrupted:
        status = INTERRUPTED
        lines.insert(0, f"PF {pf_plan.pf}: interrupted between actions; clean-up ran"
                     + ("" if not after else f", {len(after)} difference(s) remain"))
    elif result.errors or after or not result.completed or gone:
        status = FAILED
    else:
        status = CHANGED
    outcome = replace(planned, status=status, writes=writes, seqnum=seqnum, findings=_finding_dicts(after),
                      errors=[e.to_dict() for e in result.errors], error="\n".join(lines) or None,
                      detail=result.errors[0].to_dict() if result.errors else None)
    return outcome, caveats, held, again


def _record(host: Host, desired: DesiredState, report: Report, only: Optional[FrozenSet[str]]) -> None:
    """Write the run into state.json; a failure to record is a notice, never a crash."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run = {
        "config": desired.source,
        "config_sha256": desired.digest,
        "time": now,
        "unix_time": round(time.time(), 3),
        "duration_seconds": round(report.duration, 3),
        "result": report.result,
        "writes": report.writes,
        "only": sorted(only) if only is not None else None,
        "failures": [{"block": o.key, "error": o.error} for o in report.outcomes if o.pci is None],
    }
    pfs = {
        o.pci: {"name": o.name, "block": o.key, "status": o.status, "error": o.error, "time": now,
                "findings": [f["text"] for f in o.findings], "errnos": [e["errno"] for e in o.errors if e.get("errno")]}
        for o in report.outcomes if o.pci is not None
    }
    try:
        record_run(host, run, pfs, partial=only is not None)
    except StateError as exc:
        report.notices.append(f"the outcome was applied but not recorded: {exc}")





def _write_device_plugin_config(host: Host, desired: DesiredState, report: Report) -> None:
    """[device_plugin] config_file, still under the lock: written only when the whole node reads back converged."""
    from sriov_node.errors import SriovNodeError
    from sriov_node.engine.device_plugin import write_config_file

    try:
        report.device_plugin = write_config_file(host, desired, seen=report.view)
    except SriovNodeError as exc:
        report.device_plugin = f"device plugin config not written: {exc}"
    if report.device_plugin:
        report.notices.append(report.device_plugin)
