"""Progress on a terminal while PFs converge: per PF, VFs created, VFs bound as configured, what it waits for.

    with terminal_progress(host, desired, as_json=as_json) as progress:
        report = reconcile(host, desired, progress=progress)

Nothing is drawn (the context yields None) unless the stream (stderr) is a terminal and --json is
off. The engine calls `progress(pf, message, spec)` before each PF's plan runs (`spec`: the block
the engine judged it against: progress surveys nothing); between calls a ticker thread reads that
PF's sysfs state (reads only: what the kernel has made so far) and redraws its line in place; when the engine
moves on to the next PF, or the run ends, the PF's last state is printed as a line of its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass
from typing import IO, Dict, Iterator, Optional

from sriov_node.engine.compare import compare_driver
from sriov_node.host import Host
from sriov_node.model import DesiredState, PfSpec

TICK = 0.25  # seconds between two redraws of the current PF's line


@dataclass(frozen=True)
class PfProgress:
    """One PF's state as the kernel shows it now, against its block."""

    label: str  # "0000:20:00.0 (ens1f0)"
    want: int  # VFs the block asks for
    created: int  # VFs present (virtfnN links)
    bound: int  # VFs (below `want`) whose driver and driver_override are as configured

    @property
    def waiting_for(self) -> str:
        if self.created > self.want:
            return "the kernel to remove VFs"
        if self.created < self.want:
            return "the kernel to create VFs"
        if self.bound < self.want:
            return "drivers to bind"
        return "the last checks"

    def line(self) -> str:
        return f"{self.label}: VFs {self.created}/{self.want} created, {self.bound}/{self.want} bound as configured"


class Progress:
    """The engine's `progress` callback, drawing on a terminal. Use `close()` (or `terminal_progress`)."""

    def __init__(self, host: Host, desired: DesiredState, stream: IO[str], interval: float = TICK):
        self.host = host
        self.desired = desired
        self.stream = stream
        self.interval = interval
        self._specs: Optional[Dict[str, PfSpec]] = None
        self._current: Optional[str] = None
        self._started = 0.0
        import threading  # only a run drawn on a terminal pays for it

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: "Optional[threading.Thread]" = None

    # -- what the kernel shows

    def _spec(self, pf: str) -> Optional[PfSpec]:
        return (self._specs or {}).get(pf)  # the block the engine named for it

    def snapshot(self, pf: str) -> Optional[PfProgress]:
        """The PF's progress now (None when it is not a configured PF here)."""
        from sriov_node.host.observe import observe_pf

        spec = self._spec(pf)
        if spec is None:
            return None
        state = observe_pf(self.host, pf)
        want = spec.num_vfs
        bound = sum(1 for vf in state.vfs if vf.index < want and not compare_driver(
            spec.vf(vf.index), vf, state.vf_default_driver)) if state.bus == "pci" else len(state.vfs)
        return PfProgress(state.label, want, len(state.vfs), bound)

    # -- drawing

    def _draw(self, final: bool) -> None:
        if self._current is None:
            return
        snap = self.snapshot(self._current)
        if snap is None:
            return
        elapsed = time.monotonic() - self._started
        if final:
            text = f"\r\x1b[K{snap.line()} ({elapsed:.1f} s)\n"
        else:
            text = f"\r\x1b[K{snap.line()}; waiting for {snap.waiting_for} ({elapsed:.0f} s)"
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal never fails the run

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                self._draw(final=False)

    def __call__(self, pf: str, message: str, spec: Optional[PfSpec] = None) -> None:
        if spec is not None:
            self._specs = {**(self._specs or {}), pf: spec}
        with self._lock:
            self._draw(final=True)
            self._current, self._started = pf, time.monotonic()
            self._draw(final=False)
        if self._thread is None:
            import threading

            self._thread = threading.Thread(target=self._tick, name="sriov-node-progress", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._draw(final=True)
            self._current = None


def wanted(stream: IO[str], as_json: bool) -> bool:
    """Progress is drawn on a terminal only, never with --json (nor with TERM=dumb)."""
    if as_json or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def terminal_progress(host: Host, desired: Optional[DesiredState], *, as_json: bool = False,
                      stream: Optional[IO[str]] = None) -> Iterator[Optional[Progress]]:
    """A Progress for reconcile(progress=...) when `stream` (default stderr) is a terminal, else None."""
    stream = stream if stream is not None else sys.stderr
    if desired is None or not wanted(stream, as_json):
        yield None
        return
    progress = Progress(host, desired, stream)
    try:
        yield progress
    finally:
        progress.close()
