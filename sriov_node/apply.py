"""observe -> resolve -> plan -> execute -> verify, under the apply lock, per PF in isolation."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from sriov_node.config import load_config
from sriov_node.errors import EXIT_OK, EXIT_PF_FAILED, EXIT_REFUSED, HostError, InUseError, StateError
from sriov_node.execute import DEFAULT_TIMEOUT, Executor, verify
from sriov_node.host import Host
from sriov_node.model import DesiredState, HostState
from sriov_node.plan import Plan, plan
from sriov_node.resolve import resolve
from sriov_node.state import ApplyLock, write_state


@dataclass
class PfOutcome:
    pci: str
    name: Optional[str]
    key: str  # the config block, e.g. "pf[0]"
    status: str  # "unchanged" | "changed" | "failed" | "refused" | "planned"
    actions: List[Dict[str, Any]] = field(default_factory=list)
    writes: int = 0
    error: Optional[str] = None
    detail: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class ApplyReport:
    outcomes: List[PfOutcome]
    notices: List[str]
    writes: int
    dry_run: bool
    plan: Plan

    @property
    def exit_code(self) -> int:
        statuses = {o.status for o in self.outcomes}
        if "failed" in statuses:
            return EXIT_PF_FAILED
        if "refused" in statuses:
            return EXIT_REFUSED
        return EXIT_OK

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "actions": self.plan.to_dict()["actions"],
            "pfs": [o.to_dict() for o in self.outcomes],
            "notices": self.notices,
            "writes": self.writes,
            "exit_code": self.exit_code,
        }


def config_path(host: Host, explicit: Optional[str]) -> str:
    """--config wins; otherwise etc/sriov-node/config.toml under the root."""
    return explicit or host.path("etc/sriov-node", "config.toml")


def load_desired(host: Host, path: str) -> DesiredState:
    """A root daemon on the real root must not obey a file that non-root users can edit."""
    enforce = host.is_real_root and os.geteuid() == 0
    return load_config(path, enforce_trust=enforce)


def _observe_for(host: Host, desired: DesiredState) -> HostState:
    uses_mac = any(spec.selector.mac is not None for spec in desired.pfs)
    return host.observe(netlink_macs=uses_mac)


def make_plan(host: Host, desired: DesiredState) -> "tuple[Plan, List[str]]":
    observed = _observe_for(host, desired)
    targets, notices = resolve(desired, observed)
    return plan(targets, observed.pci_drivers), notices


def run_apply(
    host: Host,
    desired: DesiredState,
    *,
    dry_run: bool = False,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> ApplyReport:
    if dry_run:
        the_plan, notices = make_plan(host, desired)
        outcomes = [
            PfOutcome(p.pf, p.target.pf.name, p.target.spec.key, "planned" if p.actions else "unchanged",
                      [a.to_dict() for a in p.actions])
            for p in the_plan.pfs
        ]
        return ApplyReport(outcomes, notices, 0, True, the_plan)

    host.check_writable()  # before the lock: a captured tree gets no run/ directory either
    with ApplyLock(host, timeout):
        the_plan, notices = make_plan(host, desired)
        executor = Executor(host, timeout)
        outcomes: List[PfOutcome] = []
        for pf_plan in the_plan.pfs:
            target = pf_plan.target
            outcome = PfOutcome(pf_plan.pf, target.pf.name, target.spec.key, "unchanged",
                                [a.to_dict() for a in pf_plan.actions])
            outcomes.append(outcome)
            if not pf_plan.actions:
                continue
            disturbed = pf_plan.disturbed_vfs()
            if disturbed and not force:
                holders = host.vf_holders(disturbed)
                if holders:
                    outcome.status = "refused"
                    outcome.error = str(InUseError(pf_plan.pf, holders))
                    outcome.detail = {"holders": holders}
                    continue
            before = len(host.writes)
            try:
                executor.run(pf_plan.actions)
                problems = verify(host, target.spec, pf_plan.pf)
                if problems:
                    raise HostError(pf_plan.pf, "read back differs from the desired state: " + "; ".join(problems),
                                    hint="re-run sriov-node apply; if it persists, check dmesg")
                outcome.status = "changed"
            except HostError as exc:
                outcome.status = "failed"
                outcome.error = str(exc)
                outcome.detail = exc.to_dict()
            finally:
                outcome.writes = len(host.writes) - before
        report = ApplyReport(outcomes, notices, len(host.writes), False, the_plan)
        try:
            write_state(host, {
            "config": desired.source,
            "config_sha256": desired.digest,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "result": {EXIT_OK: "converged", EXIT_PF_FAILED: "failed", EXIT_REFUSED: "refused"}[report.exit_code],
            "pfs": {o.pci: {"name": o.name, "block": o.key, "status": o.status, "error": o.error} for o in outcomes},
            })
        except StateError as exc:
            report.notices.append(f"the outcome was applied but not recorded: {exc}")
        return report
