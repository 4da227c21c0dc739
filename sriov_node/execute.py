"""Run a PF's actions in order; confirm each write by reading the kernel back; bounded waits."""

from __future__ import annotations

import errno as E
import time
from typing import Callable, Dict, List, Optional, Type

from sriov_node import hints
from sriov_node.actions import (
    Action,
    BindDriver,
    LoadDriver,
    ProbeVf,
    SetAutoprobe,
    SetDriverOverride,
    SetNumVfs,
    UnbindDriver,
)
from sriov_node.errors import HostError
from sriov_node.host import Host
from sriov_node.model import PfSpec

DEFAULT_TIMEOUT = 60.0


class Executor:
    """The only place that writes. One instance per apply; holds no kernel state."""

    def __init__(self, host: Host, timeout: float = DEFAULT_TIMEOUT):
        self.host = host
        self.timeout = timeout
        self._handlers: Dict[Type[Action], Callable] = {
            LoadDriver: self._load_driver,
            SetNumVfs: self._set_num_vfs,
            SetAutoprobe: self._set_autoprobe,
            SetDriverOverride: self._set_driver_override,
            UnbindDriver: self._unbind,
            BindDriver: self._bind,
            ProbeVf: self._probe_default,
        }

    def run(self, actions: "tuple[Action, ...]") -> None:
        """Execute in order; the first failure raises HostError and stops this PF.

        If it stops while VF autoprobe is switched off, autoprobe is switched back on:
        a failed apply must not leave the PF refusing default drivers.
        """
        gated = None
        try:
            for action in actions:
                if not self.host.device_exists(action.pf):
                    raise HostError(action.pf, "the PF disappeared (hot-unplug, driver reset or firmware update)",
                                    errno=E.ENODEV, hint="check that the device is still present (lspci) and re-run")
                self._handlers[type(action)](action)
                if isinstance(action, SetAutoprobe):
                    gated = None if action.value else action.pf
        finally:
            if gated is not None:
                self._ungate(gated)

    def _ungate(self, pf: str) -> None:
        """Best effort after a failure: autoprobe back on, default drivers for VFs left unbound."""
        host = self.host
        try:
            host.set_autoprobe(pf, True)
            for index in range(host.num_vfs(pf) or 0):
                vf = host.vf_address(pf, index)
                if vf and host.device_driver(vf) is None and host.driver_override(vf) is None:
                    host.drivers_probe(vf)
        except OSError:
            pass  # the next apply sees autoprobe=0 and repairs it

    # ------------------------------------------------------------------ helpers

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _vf_pci(self, pf: str, index: int) -> str:
        pci = self.host.vf_address(pf, index)
        if pci is None:
            raise HostError(pf, f"VF {index} does not exist (sriov_numvfs reads {self.host.num_vfs(pf)})",
                            vf=index, hint="check dmesg for VFs the PF driver failed to add; re-run")
        return pci

    def _write_failed(self, pf: str, attr: str, exc: OSError, vf: Optional[int] = None) -> HostError:
        message, hint = hints.write_error(attr, exc.errno or E.EIO)
        return HostError(pf, message, attr=attr, errno=exc.errno, hint=hint, vf=vf)

    # ------------------------------------------------------------------ actions

    def _load_driver(self, a: LoadDriver) -> None:
        if self.host.has_pci_driver(a.driver):
            return
        try:
            self.host.load_driver(a.driver)
        except OSError as exc:
            message, hint = hints.load_error(a.driver, exc.strerror or str(exc))
            raise HostError(a.pf, message, errno=exc.errno, hint=hint)
        if not self.host.wait_for(lambda: self.host.has_pci_driver(a.driver), self._deadline()):
            raise HostError(a.pf, f"the module loaded but registered no PCI driver named {a.driver!r}",
                            hint="check the driver name: ls /sys/bus/pci/drivers")

    def _set_num_vfs(self, a: SetNumVfs) -> None:
        host = self.host
        self._write_num_vfs(a)

        def settled() -> bool:
            if host.num_vfs(a.pf) != a.value:
                return False
            return host.virtfn_count(a.pf) == a.value and all(host.vf_address(a.pf, i) for i in range(a.value))

        def untouched() -> bool:
            return host.num_vfs(a.pf) == 0 and host.virtfn_count(a.pf) == 0

        deadline = self._deadline()
        grace = min(deadline, time.monotonic() + 1.0)
        if not host.wait_for(settled, grace) and a.value and untouched():
            # Seen on NVMe right after its driver bound: the write succeeded, nothing was
            # enabled. The kernel's state says "0": writing N once more is still a 0 -> N step.
            self._write_num_vfs(a)
        if not host.wait_for(settled, deadline):
            seen = host.virtfn_count(a.pf)
            raise HostError(
                a.pf,
                f"the kernel accepted sriov_numvfs={a.value} but {seen} VF(s) exist after {self.timeout:g}s "
                f"(sriov_numvfs reads {host.num_vfs(a.pf)})",
                attr="sriov_numvfs", errno=E.ETIMEDOUT,
                hint="check dmesg for VFs the PF driver failed to add; re-run (or raise --timeout)",
            )

    def _write_num_vfs(self, a: SetNumVfs) -> None:
        host = self.host
        try:
            host.set_num_vfs(a.pf, a.value)
        except OSError as exc:
            code = exc.errno if host.device_exists(a.pf) else E.ENODEV
            message, hint = hints.numvfs_error(
                code or E.EIO, a.value,
                total=host.total_vfs(a.pf), pf_driver=host.device_driver(a.pf),
            )
            raise HostError(a.pf, message, attr="sriov_numvfs", errno=code, hint=hint)

    def _set_autoprobe(self, a: SetAutoprobe) -> None:
        try:
            self.host.set_autoprobe(a.pf, a.value)
        except OSError as exc:
            raise self._write_failed(a.pf, "sriov_drivers_autoprobe", exc)
        value = self.host.autoprobe(a.pf)
        if value is not a.value:
            raise HostError(a.pf, f"sriov_drivers_autoprobe reads {value!r} after writing {int(a.value)}",
                            attr="sriov_drivers_autoprobe", hint="re-run sriov-node apply")

    def _set_driver_override(self, a: SetDriverOverride) -> None:
        vf = self._vf_pci(a.pf, a.vf)
        try:
            self.host.set_driver_override(vf, a.driver)
        except OSError as exc:
            raise self._write_failed(a.pf, "driver_override", exc, vf=a.vf)
        if self.host.driver_override(vf) != a.driver:
            raise HostError(a.pf, f"driver_override of {vf} reads {self.host.driver_override(vf)!r} after writing {a.driver!r}",
                            vf=a.vf, attr="driver_override", hint="re-run sriov-node apply")

    def _unbind(self, a: UnbindDriver) -> None:
        vf = self._vf_pci(a.pf, a.vf)
        self._unbind_pci(a.pf, a.vf, vf, a.driver)

    def _unbind_pci(self, pf: str, index: int, vf: str, driver: str) -> None:
        try:
            self.host.unbind(vf, driver)
        except OSError as exc:
            # ENODEV: no longer bound to that driver; fine as long as it is unbound now
            if exc.errno != E.ENODEV or self.host.device_driver(vf) is not None:
                raise self._write_failed(pf, f"drivers/{driver}/unbind", exc, vf=index)
        if not self.host.wait_for(lambda: self.host.device_driver(vf) is None, self._deadline()):
            raise HostError(pf, f"{vf} is still bound to {self.host.device_driver(vf)} after unbind",
                            vf=index, errno=E.ETIMEDOUT, hint="check dmesg for the driver's remove path")

    def _bind(self, a: BindDriver) -> None:
        host = self.host
        vf = self._vf_pci(a.pf, a.vf)
        current = host.device_driver(vf)
        if current == a.driver:
            return
        if current is not None:
            self._unbind_pci(a.pf, a.vf, vf, current)
        try:
            host.drivers_probe(vf)
        except OSError as exc:
            raise self._bind_failed(a, vf, exc.errno or E.EIO)
        if host.device_driver(vf) is None and host.has_pci_driver(a.driver):
            # drivers_probe swallows probe errors; an explicit bind reports them
            try:
                host.bind(vf, a.driver)
            except OSError as exc:
                if exc.errno != E.EBUSY:  # EBUSY: it got bound meanwhile (asynchronous probe)
                    raise self._bind_failed(a, vf, exc.errno or E.EIO)
        if not host.wait_for(lambda: host.device_driver(vf) is not None, self._deadline()):
            raise self._bind_failed(a, vf, E.ETIMEDOUT)
        bound = host.device_driver(vf)
        if bound != a.driver:
            raise HostError(a.pf, f"{vf} bound to {bound} instead of {a.driver}", vf=a.vf,
                            hint=f"check driver_override of {vf}; another agent may be binding VFs")

    def _bind_failed(self, a: BindDriver, vf: str, code: int) -> HostError:
        group = self.host.iommu_group(vf)
        message, hint = hints.bind_error(code, a.driver, iommu_group=group)
        if not self.host.has_pci_driver(a.driver):
            message, hint = f"the {a.driver} driver is not loaded", f"modprobe {a.driver}"
        return HostError(a.pf, f"{vf}: {message}", vf=a.vf, attr="bind", errno=code, hint=hint)

    def _probe_default(self, a: ProbeVf) -> None:
        vf = self._vf_pci(a.pf, a.vf)
        if self.host.device_driver(vf) is not None:
            return
        try:
            self.host.drivers_probe(vf)
        except OSError as exc:
            raise self._write_failed(a.pf, "drivers_probe", exc, vf=a.vf)


def verify(host: Host, spec: PfSpec, pf: str) -> List[str]:
    """What still differs from the desired state on this PF, re-read from the kernel."""
    problems: List[str] = []
    if host.autoprobe(pf) is False:
        problems.append("sriov_drivers_autoprobe reads 0, wanted 1")
    have = host.num_vfs(pf)
    if have != spec.num_vfs:
        problems.append(f"sriov_numvfs reads {have}, wanted {spec.num_vfs}")
        return problems
    for index, driver in sorted(spec.explicit_drivers().items()):
        vf = host.vf_address(pf, index)
        if vf is None:
            problems.append(f"VF {index} is missing")
            continue
        bound = host.device_driver(vf)
        if bound != driver:
            problems.append(f"VF {index} ({vf}) is bound to {bound or 'no driver'}, wanted {driver}")
        elif host.driver_override(vf) != driver:
            problems.append(f"VF {index} ({vf}) driver_override is {host.driver_override(vf)!r}, wanted {driver!r}")
    return problems
