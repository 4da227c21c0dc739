"""SIGINT and SIGTERM in the CLI, from the first line of `main` to the report: one answer, one exit.

`install()` is the first thing `main` does (before typer and the commands are imported). From then on:

- outside a run (imports, option parsing, reading the config, observing the host, ...) a signal
  raises `Interrupted`, which `main` turns into the one report: a JSON error document with
  --json, a sentence on stderr without, exit 128 + the signal (130 SIGINT, 143 SIGTERM);
- inside `deferred()` (the engine's run, which must not stop half-way through an action) the first
  signal is only noted: the engine asks `cancelled()` between actions, stops, runs its clean-up
  and reports the run as interrupted; a second signal raises `Interrupted` (stop at once);
- `settle()` is the decision point before a report is printed: it blocks both signals (one that
  comes later cannot change or cut a report already decided; the process exits as the report says)
  and returns the signal that came before, if any, so that the report says "interrupted" and the
  exit is 128 + that signal.

Only the standard library is imported here: this runs before anything heavy is loaded.
"""

from __future__ import annotations

import os
import sys

# The C module, not `signal`: that one imports enum, milliseconds in which a signal would still find
# Python's default handling. No typing or contextlib either; the annotations are never evaluated.
import _signal as signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_signum: int | None = None  # the first signal received
_taken = False  # it came inside a deferred region: the run stops and reports it itself
_depth = 0  # nesting of deferred()
_settled = False  # the report is decided: signals are blocked, a late one is only recorded
_raised = False  # Interrupted is on its way to main: another signal must not raise a second one
_previous_hook = sys.unraisablehook
_armed = False  # SIGALRM is to raise Interrupted again (see _unraisable)


class Interrupted(BaseException):
    """A signal stopped the process outside a run (or a second one inside): main reports it and exits.

    A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
    """

    def __init__(self, signum: int, at_once: bool = False):
        super().__init__(signum)
        self.signum = signum
        self.at_once = at_once

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def message(self) -> str:
        if self.at_once:
            return (f"stopped at once by a second {name(self.signum)}: the current action may be half done and "
                    "its clean-up did not run; run the command again")
        return f"stopped by {name(self.signum)}"


NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}



def wrapped(exc: BaseException) -> "Interrupted | None":
    """The Interrupted an exception carries as its cause or context (Python turns an exception
    raised in a class body's `__set_name__`, which an import runs, into a RuntimeError from it)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Interrupted):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None

def name(signum: int) -> str:
    return NAMES.get(signum) or f"signal {signum}"


def _handle(signum: int, frame: object) -> None:
    global _signum, _taken, _raised
    first = _signum is None
    if first:
        _signum = signum
    if _settled or _raised:
        return  # the report is decided (or on its way): it stands
    if _depth and first:
        _taken = True
        _say(f"sriov-node: {name(signum)}: stopping after the current action (again to stop at once)\n")
        return
    _raised = True
    raise Interrupted(_signum, at_once=_taken)


def _unraisable(unraisable: object) -> None:
    """Interrupted raised where Python cannot let it propagate (a weakref callback, a __del__, e.g. inside
    importlib) is not printed as "Exception ignored"; it is raised again a moment later (SIGALRM),
    back in ordinary code."""
    global _armed
    exc = getattr(unraisable, "exc_value", None)
    if isinstance(exc, Interrupted):
        signal.signal(signal.SIGALRM, _again)
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        _armed = True
        return
    _previous_hook(unraisable)


def _again(signum: int, frame: object) -> None:
    if not _settled and _signum is not None:
        raise Interrupted(_signum, at_once=_taken)


def _say(text: str) -> None:
    # os.write, not sys.stderr: the handler may run while the main code is inside a write to stderr
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def install() -> None:
    """Catch SIGINT and SIGTERM from here on (the first thing main does)."""
    global _previous_hook
    for sig in SIGNALS:
        signal.signal(sig, _handle)
    # a signal mask is inherited through fork and exec: a parent that had blocked them (a test
    # harness, a supervisor in the middle of its own clean-up) would leave a daemon deaf to SIGTERM
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    if sys.unraisablehook is not _unraisable:
        _previous_hook = sys.unraisablehook
        sys.unraisablehook = _unraisable


def received() -> int | None:
    return _signum


def cancelled() -> bool:
    """Has a signal asked the run to stop? (the engine asks between actions and during waits)"""
    return _signum is not None


class deferred:
    """A run that stops between actions: the first signal is noted, a second stops at once."""

    def __enter__(self) -> "deferred":
        global _depth
        reopen()
        _depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        global _depth
        _depth -= 1


def settle() -> int | None:
    """The decision point before a report: block SIGINT/SIGTERM, return the signal received before, if any.

    (signal.pthread_sigmask runs the Python handlers of signals the C level caught just before the
    block; with _settled set they only record, so a signal is either seen here or arrives later.)
    """
    global _settled, _armed
    _settled = True
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    if _armed:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        _armed = False
    return _signum


def settled() -> bool:
    """Is the report decided (settle() called, no run reopened since)?"""
    return _settled


def reopen() -> None:
    """Undo settle(): a command that printed part of its answer goes on to a run that may be stopped."""
    global _settled
    if _settled:
        _settled = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def taken() -> bool:
    """The signal came during a run, which stopped between actions and reports it (as interrupted)."""
    return _taken


def reset() -> None:
    """Back to the state before install() (tests running the CLI in-process)."""
    global _signum, _taken, _depth, _settled, _raised
    settle()  # disarms the SIGALRM retry, if any
    reopen()
    _signum, _taken, _depth, _settled, _raised = None, False, 0, False, False
