"""The one vocabulary of outcomes: what became of a PF, of a run, of a recorded generation, and the
exit code each means.

    a PF's outcome     unchanged | changed            (converged: the kernel read back agrees)
                       failed | refused | interrupted | planned (a dry run's PF with actions)
    a run's result     converged | failed | refused | interrupted | planned
    a generation's     converged | failed | interrupted (a run refused before writing records nothing)

The members are strings (`Outcome.FAILED == "failed"`), so JSON, state.json and the generation
records keep the words they always had.
"""

from __future__ import annotations

from enum import Enum
from typing import Dict, Iterable, Optional, Sized

from sriov_node.errors import EXIT_OK, EXIT_PF_FAILED, EXIT_REFUSED


class Outcome(str, Enum):
    UNCHANGED = "unchanged"  # a PF the comparison found converged: nothing written
    CHANGED = "changed"  # a PF converged by this run, read back
    FAILED = "failed"
    REFUSED = "refused"  # nothing written: a prerequisite is missing, or a VF it would take is in use
    PLANNED = "planned"  # a dry run: what apply would do
    INTERRUPTED = "interrupted"  # a signal stopped the run between two actions
    CONVERGED = "converged"  # a run's (or a generation's) result: every PF it handled converged

    def __str__(self) -> str:  # "failed", never "Outcome.FAILED", in logs and messages
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


UNCHANGED, CHANGED, FAILED, REFUSED, PLANNED, INTERRUPTED, CONVERGED = (
    Outcome.UNCHANGED, Outcome.CHANGED, Outcome.FAILED, Outcome.REFUSED, Outcome.PLANNED, Outcome.INTERRUPTED,
    Outcome.CONVERGED)

# A PF's outcomes that mean "the kernel read back agrees with its block"
PF_CONVERGED = frozenset({UNCHANGED, CHANGED})

# What a run's result makes of the process's exit code
EXIT_CODES: Dict[Outcome, int] = {
    CONVERGED: EXIT_OK,
    PLANNED: EXIT_OK,
    FAILED: EXIT_PF_FAILED,
    INTERRUPTED: EXIT_PF_FAILED,
    REFUSED: EXIT_REFUSED,
}

# The results a generation records
RECORDED = (CONVERGED, FAILED, INTERRUPTED)


def pf_converged(status: Optional[str]) -> bool:
    """A PF's outcome (or the status state.json kept for it) says it converged."""
    return status in PF_CONVERGED


def verdict(statuses: Iterable[str], *, interrupted: bool = False, missing: bool = False) -> Outcome:
    """A run's result from its PFs' outcomes: interrupted when the run was; failed when a PF failed
    or was interrupted (or an awaited PF never came); refused when a PF was refused; else converged."""
    seen = set(statuses)
    if interrupted:
        return INTERRUPTED
    if missing or seen & {FAILED, INTERRUPTED}:
        return FAILED
    if REFUSED in seen:
        return REFUSED
    return CONVERGED


def exit_code(result: str) -> int:
    """The exit code of a run whose result is `result`."""
    return EXIT_CODES[Outcome(result)]


def recorded(result: str, writes: int) -> Optional[Outcome]:
    """The outcome a run with this result records as a generation, or None when it records nothing:
    a dry run, or a run refused before it wrote (refused after another PF was written, the host moved)."""
    if result == REFUSED:
        return FAILED if writes else None
    return Outcome(result) if result in RECORDED else None


def merged(statuses: Iterable[Optional[str]], run_result: Optional[str]) -> Outcome:
    """The node-wide result after a per-PF run, from every PF's last status: converged when all are,
    else interrupted when this run was, else failed."""
    if all(pf_converged(s) for s in statuses):
        return CONVERGED
    return INTERRUPTED if run_result == INTERRUPTED else FAILED


def host_converged(findings: Iterable[Sized], failures: Sized) -> bool:
    """The one definition of "the host is converged": every block resolves here (no failures) and
    the comparison finds nothing on any PF a block selects (each item: one PF's findings)."""
    return not failures and all(not f for f in findings)
