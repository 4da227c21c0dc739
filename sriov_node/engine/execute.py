"""Run one PF's plan; confirm each write by reading the kernel back; bounded waits; clean up on a stop.

The executor decides nothing: it runs the planner's actions in order, and writes nothing the plan
does not show: each action's own writes (`Action.writes()`), and a write again only under a retry
rule the action carries (`Action.retries()`: the second sriov_numvfs write, the unbind after a
probe race, the default driver's modprobe or bind file), which `apply --dry-run` prints. A failing PF-wide action
(sriov_numvfs, autoprobe) stops the plan; a failing VF action stops only that VF's remaining
actions, so the other VFs still converge. When the plan stops early (a PF-wide failure, or a
cancellation between actions) its `on_failure` clean-up runs, best effort.
"""

from __future__ import annotations

import errno as E
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Type

from sriov_node import drivers
from sriov_node.engine import hints
from sriov_node.engine.actions import (
    BIND_FILE,
    DEFAULT_BIND_FILE,
    DEFAULT_TAKEN,
    LOAD_DEFAULT,
    NUMVFS_AGAIN,
    PROBE_RACE,
    SEND_REST,
    Action,
    BindDriver,
    Retry,
    LoadDriver,
    ProbeVf,
    ReplugPf,
    SetAutoprobe,
    SetDriverOverride,
    SetEswitchMode,
    SetNumVfs,
    SetPfMtu,
    SetVfMtu,
    SetVfGuids,
    SetVfSetting,
    UnbindDriver,
)
from sriov_node.errors import HostError
from sriov_node.host import Host
from sriov_node.engine.compare import is_default_driver
from sriov_node.host.observe import default_driver_of, default_drivers_of, device_netdevs, pf_netdev
from sriov_node.host.paths import CLASS_NET, PCI_DEVICES
from sriov_node.model import VF_LINK_ATTRS
from sriov_node.host.sysfs import DEFAULT_TIMEOUT
from sriov_node.engine.plan import PfPlan


class _Skip(Exception):
    """A clean-up action with nothing left to do (its VF is gone, or already as wanted)."""


@dataclass
class RunResult:
    errors: List[HostError] = field(default_factory=list)
    completed: bool = True  # every action ran (some VF actions may have failed)
    interrupted: bool = False
    cleanup_notes: List[str] = field(default_factory=list)


def _never() -> bool:
    return False


class Executor:
    """The only place that writes. One instance per run; holds no kernel state."""

    def __init__(self, host: Host, timeout: float = DEFAULT_TIMEOUT, cancelled: Callable[[], bool] = _never,
                 fresh: bool = True):
        self.host = host
        self._note = fresh  # read what the kernel gave the VFs this run creates (False: a run nobody records)
        self.sysfs = host.sysfs
        self.timeout = timeout
        self.cancelled = cancelled
        self._cleanup = False
        # VFs a default driver took in this run: (pf, vf) -> (VF address, driver, when)
        self._probed: Dict[Tuple[str, int], Tuple[str, str, float]] = {}
        self._created: Dict[str, float] = {}  # PF -> when VFs were created with autoprobe on
        self._addresses: Dict[Tuple[str, int], str] = {}  # (PF, VF index) -> VF address, until the count changes
        self._made: Set[str] = set()  # PFs whose VFs this run created (a count is only ever written from 0)
        # what the kernel gave a VF this run created, read just before the run first set it: PF ->
        # {VF index as a string: {key: value}}, the pre-images of those keys (engine/preimages.py)
        self.fresh: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self._handlers: Dict[Type[Action], Callable] = {
            LoadDriver: self._load_driver,
            SetNumVfs: self._set_num_vfs,
            SetAutoprobe: self._set_autoprobe,
            SetDriverOverride: self._set_driver_override,
            UnbindDriver: self._unbind,
            BindDriver: self._bind,
            ProbeVf: self._probe_default,
            SetPfMtu: self._set_pf_mtu,
            SetEswitchMode: self._set_eswitch_mode,
            SetVfMtu: self._set_vf_mtu,
            ReplugPf: self._replug_pf,
        }

    def run(self, plan: PfPlan) -> RunResult:
        result = RunResult()
        failed_vfs: Set[int] = set()
        actions = list(plan.actions)
        i = 0
        while i < len(actions):
            action = actions[i]
            if self.cancelled():
                result.completed, result.interrupted = False, True
                break
            if isinstance(action, SetVfSetting):  # consecutive settings go out as one request
                batch = [action]
                while i + 1 < len(actions) and isinstance(actions[i + 1], SetVfSetting):
                    i += 1
                    batch.append(actions[i])
                i += 1
                errors = self._set_vf_settings(batch)
                if errors and not self._present(action.pf, result):
                    break
                result.errors += errors
                continue
            if isinstance(action, SetVfGuids):  # a refusal fails its VFs; their drivers are bound again all the same
                i += 1
                errors = self._set_vf_guids(action)
                if errors and not self._present(action.pf, result):
                    break
                result.errors += errors
                continue
            i += 1
            vf = action.target_vf
            if vf is not None and vf in failed_vfs:
                continue
            try:
                self._handlers[type(action)](action)
            except HostError as exc:
                # A write that fails is the first sign of a PF that vanished: asked only then, not
                # before every action (a lstat per write is a tenth of the work on a slow machine).
                if not self._present(action.pf, result):
                    break
                result.errors.append(exc)
                if isinstance(action, LoadDriver) and action.default:
                    continue  # the default driver's VFs fail at their probe, with this reason; the rest goes on
                if vf is None:
                    result.completed = False
                    break
                failed_vfs.add(vf)
        if not result.completed and plan.on_failure:
            self._run_cleanup(plan, result)
        return result

    def _present(self, pf: str, result: RunResult) -> bool:
        if self.sysfs.pf_exists(pf):
            return True
        result.errors.append(HostError(pf, "the PF disappeared (hot-unplug, driver reset or firmware update)",
                                       errno=E.ENODEV, hint="check that the device is still present (lspci) and re-run"))
        result.completed = False
        return False

    def settle(self, pf: str) -> List[HostError]:
        """After default-driver probes: wait out the probe grace, then name each VF its driver let go.

        Drivers that initialise asynchronously (nvme) bind, then release a device whose
        initialisation fails: a read taken right after the probe would call that converged.
        """
        probed = {k: v for k, v in self._probed.items() if k[0] == pf}
        times = [when for _, _, when in probed.values()] + ([self._created[pf]] if pf in self._created else [])
        if not times or not self._may_let_go(pf, probed):
            return []
        time.sleep(max(0.0, max(times) + self.sysfs.probe_grace - time.monotonic()))
        errors = []
        for (_, index), (vf, driver, when) in sorted(probed.items()):
            if self.sysfs.device_driver(vf) is None:
                errors.append(HostError(
                    pf, f"{vf}: the kernel's default driver {driver} took the VF, then let it go "
                    "(its initialisation of the device failed)", vf=index, attr="probe", errno=E.ENODEV,
                    hint=f"check dmesg for {driver}'s messages about {vf}; or name a driver for the VF "
                         "(driver = \"...\") or \"none\""))
        return errors

    def _may_let_go(self, pf: str, probed: Dict[Tuple[str, int], Tuple[str, str, float]]) -> bool:
        """Whether a VF the kernel's default driver took this run may still be let go: its driver is
        one that releases a device after an asynchronous failure (drivers.py `async_release`: nvme),
        one not known here, or none yet (an asynchronous probe still under way)."""
        seen = {driver for _, driver, _ in probed.values()}
        if pf in self._created:
            seen |= {self.sysfs.device_driver(vf) for (owner, _), vf in self._addresses.items() if owner == pf}
        for name in seen:
            row = drivers.driver(name) if name and name != "?" else None
            if row is None or row.async_release:
                return True
        return False

    def _run_cleanup(self, plan: PfPlan, result: RunResult) -> None:
        self._cleanup = True
        try:
            for action in plan.on_failure:
                try:
                    self._handlers[type(action)](action)
                except _Skip:
                    continue
                except (HostError, OSError) as exc:
                    result.cleanup_notes.append(f"clean-up step '{action.describe()}' failed: {exc}")
        finally:
            self._cleanup = False

    # ------------------------------------------------------------------ helpers

    def _deadline(self, cap: Optional[float] = None) -> float:
        return time.monotonic() + (self.timeout if cap is None else min(cap, self.timeout))

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        return self.sysfs.wait_for(predicate, deadline, cancelled=self.cancelled)

    def _vf_pci(self, pf: str, index: int) -> str:
        """VF `index`'s PCI address, read once per run (a count change forgets them)."""
        known = self._addresses.get((pf, index))
        if known is not None:
            return known
        pci = self.sysfs.vf_address(pf, index)
        if pci is not None:
            self._addresses[(pf, index)] = pci
        if pci is None:
            if self._cleanup:
                raise _Skip()
            raise HostError(pf, f"VF {index} does not exist (sriov_numvfs reads {self.sysfs.num_vfs(pf)})",
                            vf=index, hint="check dmesg for VFs the PF driver failed to add; re-run")
        return pci

    def addresses(self, pf: str) -> Dict[int, str]:
        """The VF addresses of `pf` this run has read, {index: PCI address} (verification reuses them)."""
        return {index: pci for (p, index), pci in self._addresses.items() if p == pf}

    def _write_failed(self, pf: str, attr: str, exc: OSError, vf: Optional[int] = None) -> HostError:
        message, hint = hints.write_error(attr, exc.errno or E.EIO)
        return HostError(pf, message, attr=attr, errno=exc.errno, hint=hint, vf=vf)

    # ------------------------------------------------------------------ actions

    @staticmethod
    def _may(a: Action, rule: Retry) -> bool:
        """Whether the action carries this retry rule (what the plan shows is all the executor does)."""
        return rule in a.retries()

    def _has_driver(self, name: str) -> bool:
        """A PCI driver by a module's name (modules name it with "_", some drivers register with "-")."""
        return self.sysfs.has_pci_driver(name) or self.sysfs.has_pci_driver(name.replace("_", "-"))

    def _load_driver(self, a: LoadDriver) -> None:
        if self._has_driver(a.driver):
            return
        try:
            self.host.modules.load(a.driver)
        except OSError as exc:
            message, hint = hints.load_error(a.driver, exc.strerror or str(exc))
            raise HostError(a.pf, message, errno=exc.errno, hint=hint)
        # modprobe returns once the module's init ran (its PCI driver registered): a short grace, not --timeout
        if not self._wait(lambda: self._has_driver(a.driver), self._deadline(self.sysfs.probe_grace)):
            raise HostError(a.pf, f"the module loaded but registered no PCI driver named {a.driver!r}",
                            hint="check the driver name: ls /sys/bus/pci/drivers")

    def _replug_pf(self, a: ReplugPf) -> None:
        """remove the PF, rescan the bus, wait for it to come back bound (with its netdev's name)."""
        sysfs = self.sysfs
        have = sysfs.num_vfs(a.pf) or 0
        if have:
            # disabled by the PF's own driver first: a driver that leaves SR-IOV enabled when its
            # PF goes (nvme) would leave the VFs behind as orphans, in the way of the new ones
            self._set_num_vfs(SetNumVfs(a.pf, value=0, current=have))
        self._addresses = {k: v for k, v in self._addresses.items() if k[0] != a.pf}
        try:
            sysfs.write(PCI_DEVICES, (a.pf, "remove"), "1\n")
        except OSError as exc:
            raise self._write_failed(a.pf, "remove", exc)
        try:
            sysfs.write("sys/bus/pci", ("rescan",), "1\n")
        except OSError as exc:
            message, _ = hints.write_error("/sys/bus/pci/rescan", exc.errno or E.EIO)
            raise HostError(a.pf, f"the PF was removed, but {message}", attr="rescan", errno=exc.errno,
                            hint="echo 1 > /sys/bus/pci/rescan, then re-run sriov-node apply")

        def back() -> bool:
            return (sysfs.device_exists(a.pf) and sysfs.device_driver(a.pf) is not None
                    and (a.ifname is None or sysfs.exists(CLASS_NET, a.ifname)))

        if not self._wait(back, self._deadline()):
            found = sysfs.device_exists(a.pf)
            raise HostError(
                a.pf, "after removing the PF and rescanning the bus, "
                + ("it did not come back" if not found else
                   f"it came back without {'its driver' if sysfs.device_driver(a.pf) is None else 'its netdev ' + str(a.ifname)}")
                + f" within {self.timeout:g}s", attr="rescan", errno=E.ETIMEDOUT,
                hint="check dmesg for the PF driver's probe; echo 1 > /sys/bus/pci/rescan; re-run sriov-node apply")
        left = [i for i in a.stale if sysfs.exists(PCI_DEVICES, a.pf, f"virtfn{i}")]
        if left:
            raise HostError(a.pf, f"the stale virtfn{left[0]} link is still there after the PF came back",
                            attr="rescan", hint="reboot to clear it, then re-run sriov-node apply")

    def _set_num_vfs(self, a: SetNumVfs) -> None:
        sysfs = self.sysfs
        self._addresses = {k: v for k, v in self._addresses.items() if k[0] != a.pf}
        self._write_num_vfs(a)
        if a.value:
            self._made.add(a.pf)
        else:
            self._made.discard(a.pf)
            self.fresh.pop(a.pf, None)

        pci = sysfs.is_pci(a.pf)

        def settled() -> bool:
            if sysfs.num_vfs(a.pf) != a.value:
                return False
            if not pci:  # VFs without PCI functions (netdevsim): the count is all there is
                return True
            if self._live_virtfns(a.pf) != a.value:
                return False
            for i in range(a.value):  # every virtfnN resolves: remember the addresses for this run
                address = sysfs.vf_address(a.pf, i)
                if address is None:
                    return False
                self._addresses[(a.pf, i)] = address
            return True

        def untouched() -> bool:
            return sysfs.num_vfs(a.pf) == 0 and (not pci or self._live_virtfns(a.pf) == 0)

        deadline = self._deadline()
        grace = min(deadline, time.monotonic() + 1.0)
        done = self._wait(settled, grace)
        if not done and self._may(a, NUMVFS_AGAIN) and untouched() and not self.cancelled():
            # Seen on NVMe right after its driver bound: the write succeeded, nothing was
            # enabled. The kernel's state says "0": writing N once more is still a 0 -> N step.
            self._write_num_vfs(a)
        if a.value and pci and sysfs.autoprobe(a.pf):
            self._created[a.pf] = time.monotonic()  # the kernel probes them now, maybe asynchronously
        if not done and not self._wait(settled, deadline):
            seen = self._live_virtfns(a.pf)
            raise HostError(
                a.pf,
                f"the kernel accepted sriov_numvfs={a.value} but {seen} VF(s) exist"
                + (" when the run was interrupted" if self.cancelled() else f" after {self.timeout:g}s")
                + f" (sriov_numvfs reads {sysfs.num_vfs(a.pf)})",
                attr="sriov_numvfs", errno=E.ETIMEDOUT,
                hint="check dmesg for VFs the PF driver failed to add; re-run (or raise --timeout)",
            )

    def _live_virtfns(self, pf: str) -> int:
        """virtfnN links that lead to a VF of this PF (its physfn names it): the dangling link a VF
        removed by hand leaves behind is no VF (the kernel keeps it through a disable)."""
        return sum(1 for name in self.sysfs.listdir(PCI_DEVICES, pf)
                   if name.startswith("virtfn") and self.sysfs.link_name(PCI_DEVICES, pf, name, "physfn") == pf)

    def _write_num_vfs(self, a: SetNumVfs) -> None:
        sysfs = self.sysfs
        try:
            sysfs.set_num_vfs(a.pf, a.value)
        except OSError as exc:
            code = exc.errno if sysfs.device_exists(a.pf) else E.ENODEV
            message, hint = hints.numvfs_error(
                code or E.EIO, a.value,
                total=sysfs.total_vfs(a.pf), pf_driver=sysfs.device_driver(a.pf),
            )
            raise HostError(a.pf, message, attr="sriov_numvfs", errno=code, hint=hint)

    def _set_autoprobe(self, a: SetAutoprobe) -> None:
        if self._cleanup and self.sysfs.autoprobe(a.pf) is a.value:
            raise _Skip()
        try:
            self.sysfs.set_autoprobe(a.pf, a.value)
        except OSError as exc:
            raise self._write_failed(a.pf, "sriov_drivers_autoprobe", exc)
        value = self.sysfs.autoprobe(a.pf)
        if value is not a.value:
            raise HostError(a.pf, f"sriov_drivers_autoprobe reads {value!r} after writing {int(a.value)}",
                            attr="sriov_drivers_autoprobe", hint="re-run sriov-node apply")

    def _set_driver_override(self, a: SetDriverOverride) -> None:
        vf = self._vf_pci(a.pf, a.vf)
        if self._cleanup and self.sysfs.driver_override(vf) == a.driver:
            raise _Skip()
        try:
            self.sysfs.set_driver_override(vf, a.driver)
        except OSError as exc:
            raise self._write_failed(a.pf, "driver_override", exc, vf=a.vf)
        # Read back by what follows: the bind's `driver` link, and the verification of every VF.

    def _unbind(self, a: UnbindDriver) -> None:
        vf = self._vf_pci(a.pf, a.vf)
        self._unbind_pci(a.pf, a.vf, vf, a.driver)

    def _unbind_pci(self, pf: str, index: int, vf: str, driver: str) -> None:
        try:
            self.sysfs.unbind(vf, driver)
        except OSError as exc:
            # ENODEV: no longer bound to that driver; fine as long as it is unbound now
            if exc.errno != E.ENODEV or self.sysfs.device_driver(vf) is not None:
                raise self._write_failed(pf, f"drivers/{driver}/unbind", exc, vf=index)
        # unbind runs the driver's remove inside the write: bound still (after a short grace) means
        # something bound it again at once, and waiting longer changes nothing
        if not self._wait(lambda: self.sysfs.device_driver(vf) is None, self._deadline(self.sysfs.probe_grace)):
            raise HostError(pf, f"{vf} is still bound to {self.sysfs.device_driver(vf)} after unbind",
                            vf=index, errno=E.ETIMEDOUT, hint="check dmesg for the driver's remove path")

    def _bind(self, a: BindDriver) -> None:
        """drivers_probe (the override names the driver), then read the driver link: one write, one read.

        Its retry rules: a VF found bound to another driver (a probe raced us) is unbound and probed
        again (PROBE_RACE); one the probe left unbound is bound through the driver's bind file
        (BIND_FILE), which answers with the probe's errno.
        """
        sysfs = self.sysfs
        vf = self._vf_pci(a.pf, a.vf)
        if self._cleanup and sysfs.device_driver(vf) is not None:
            raise _Skip()  # a clean-up binds only what the stopped run left unbound
        try:
            sysfs.drivers_probe(vf)  # a bound VF keeps its driver: a no-op
        except OSError as exc:
            raise self._bind_failed(a, vf, exc.errno or E.EIO)
        bound = sysfs.device_driver(vf)
        if bound is not None and bound != a.driver and self._may(a, PROBE_RACE):
            self._unbind_pci(a.pf, a.vf, vf, bound)
            try:
                sysfs.drivers_probe(vf)
            except OSError as exc:
                raise self._bind_failed(a, vf, exc.errno or E.EIO)
            bound = sysfs.device_driver(vf)
        if bound is None:
            if not sysfs.has_pci_driver(a.driver) or not self._may(a, BIND_FILE):
                raise self._bind_failed(a, vf, E.ENODEV)  # nothing can bind it: say so now, never wait
            # drivers_probe swallows probe errors; an explicit bind reports them. The bind runs the
            # probe inside the write: when it returns, the driver link is there or it never will be.
            try:
                sysfs.bind(vf, a.driver)
            except OSError as exc:
                code = exc.errno or E.EIO
                bound = sysfs.device_driver(vf)  # EBUSY: already bound; fine only if to the wanted driver
                if not (code == E.EBUSY and bound == a.driver):
                    raise self._bind_failed(a, vf, code, bound=bound)
            if not self._wait(lambda: sysfs.device_driver(vf) is not None, self._deadline(sysfs.probe_grace)):
                raise self._bind_failed(a, vf, E.ENODEV, let_go=True)
            bound = sysfs.device_driver(vf)
        if bound != a.driver:
            raise HostError(a.pf, f"{vf} bound to {bound} instead of {a.driver}", vf=a.vf,
                            hint=f"check driver_override of {vf}; another agent may be binding VFs")

    def _bind_failed(self, a: BindDriver, vf: str, code: int, *, bound: Optional[str] = None,
                     let_go: bool = False) -> HostError:
        group = self.sysfs.iommu_group(vf)
        message, hint = hints.bind_error(code, a.driver, iommu_group=group, bound=bound)
        if let_go:
            message, hint = (f"{a.driver} accepted the VF, then let it go (its initialisation of the device failed)",
                             f"check dmesg for {a.driver}'s messages about {vf}")
        if not self.sysfs.has_pci_driver(a.driver):
            message, hint = f"the {a.driver} driver is not loaded", f"modprobe {a.driver}"
        return HostError(a.pf, f"{vf}: {message}", vf=a.vf, attr="bind", errno=code, hint=hint)

    def _probe_default(self, a: ProbeVf) -> None:
        """drivers_probe; under the action's rules: a driver with a dynamic ID that took it is replaced by
        the default (DEFAULT_TAKEN); if nothing binds, the module the VF's modalias names is loaded, as
        udev would (LOAD_DEFAULT, when the plan could not know it), and the VF probed again; then the
        default driver's bind file says why not (DEFAULT_BIND_FILE)."""
        sysfs = self.sysfs
        vf = self._vf_pci(a.pf, a.vf)
        if sysfs.device_driver(vf) is not None:
            if self._cleanup:
                raise _Skip()
            return
        if self._cleanup and sysfs.driver_override(vf) is not None:
            raise _Skip()  # meant for a named driver (or none): never hand it to the default one

        def bound() -> bool:
            return sysfs.device_driver(vf) is not None

        def probe() -> bool:
            try:
                sysfs.drivers_probe(vf)
            except OSError as exc:
                raise self._write_failed(a.pf, "drivers_probe", exc, vf=a.vf)
            if bound() or self._wait(bound, self._deadline(sysfs.probe_grace)):
                self._probed[(a.pf, a.vf)] = (vf, sysfs.device_driver(vf) or "?", time.monotonic())
                return True
            return False

        if probe():
            taken = sysfs.device_driver(vf)
            defaults = default_drivers_of(self.host, vf)
            if taken is None or is_default_driver(taken, sysfs.driver_override(vf), defaults) is not False \
                    or not self._may(a, DEFAULT_TAKEN):
                return
            # A driver with a dynamic ID for it (new_id) came first: take the VF back from it and
            # bind the default through its own bind file, which no other driver can answer.
            self._probed.pop((a.pf, a.vf), None)
            self._unbind_pci(a.pf, a.vf, vf, taken)
            error = self._bind_default(a, vf, defaults[0] if defaults else None)
            if error is not None:
                raise error
            return
        default = default_driver_of(self.host, vf)
        if default is not None and not self._has_driver(default) and self._may(a, LOAD_DEFAULT):
            try:
                self.host.modules.load(default)
            except OSError as exc:
                message, hint = hints.load_error(default, exc.strerror or str(exc))
                raise HostError(a.pf, f"{vf}: the kernel's default driver {default} is not loaded and {message}",
                                vf=a.vf, errno=exc.errno, hint=hint)
            if probe():
                return
        if not self._may(a, DEFAULT_BIND_FILE):
            default = None  # no bind file to write: say that nothing bound
        error = self._bind_default(a, vf, default)
        if error is not None:
            raise error

    def _bind_default(self, a: ProbeVf, vf: str, default: Optional[str]) -> Optional[HostError]:
        """Bind the default driver through its bind file, which returns the probe's errno: why it failed."""
        ident = self.sysfs.uevent(PCI_DEVICES, vf).get("PCI_ID", "").lower() or vf
        if default is None:
            return HostError(a.pf, f"{vf}: no driver bound after probing: no loaded driver matches {ident}",
                             vf=a.vf, errno=E.ENODEV,
                             hint="load the VF driver's module, or name one with driver = \"...\" (or \"none\")")
        driver = default if self.sysfs.has_pci_driver(default) else default.replace("_", "-")
        code = E.ENODEV
        try:
            self.sysfs.bind(vf, driver)
        except OSError as exc:
            code = exc.errno or E.EIO
        else:
            if self._wait(lambda: self.sysfs.device_driver(vf) is not None, self._deadline(self.sysfs.probe_grace)):
                self._probed[(a.pf, a.vf)] = (vf, driver, time.monotonic())
                return None
        message, hint = hints.default_probe_error(code, driver)
        return HostError(a.pf, f"{vf}: {message}", vf=a.vf, attr="probe", errno=code, hint=hint)

    # ------------------------------------------------------------------ netlink and devlink

    def _pf_driver(self, pf: str) -> Optional[str]:
        return self.sysfs.device_driver(pf) if self.sysfs.is_pci(pf) else self.sysfs.pf_driver(pf)

    def _netdev(self, pf: str, attr: str) -> Tuple[str, Optional[int]]:
        """The PF's netdev as it is now (name, ifindex), not as the plan saw it: udev may have renamed
        it since (its rename after a probe), and its old name may be another netdev's by now."""
        netdevs, ifindex = pf_netdev(self.host, pf)
        if not netdevs:
            raise HostError(pf, "the PF has no netdev now (its driver unbound or reloading)", attr=attr,
                            errno=E.ENODEV, hint="check that the PF's driver is bound (lspci -k) and dmesg")
        return netdevs[0], ifindex

    def _set_pf_mtu(self, a: SetPfMtu) -> None:
        ifname, ifindex = self._netdev(a.pf, "mtu")
        try:
            self.host.links.set_mtu(ifname, a.value, ifindex=ifindex)
        except OSError as exc:
            message, hint = hints.netlink_error(f"setting {ifname}'s MTU to {a.value}", exc.errno or E.EIO)
            raise HostError(a.pf, message, attr="mtu", errno=exc.errno, hint=hint)
        names, _ = pf_netdev(self.host, a.pf)
        ifname = names[0] if names else ifname
        mtu = self.sysfs.read_int(self.sysfs.pf_dir(a.pf), a.pf, "net", ifname, "mtu")
        if mtu != a.value:
            raise HostError(a.pf, f"{ifname}'s MTU reads {mtu} after setting {a.value}", attr="mtu",
                            hint="check the device's max_mtu (ip -d link show) and dmesg")

    def _set_eswitch_mode(self, a: SetEswitchMode) -> None:
        devlink = self.host.devlink
        try:
            devlink.set_eswitch_mode(a.handle, a.value)
        except OSError as exc:
            message, hint = hints.eswitch_error(exc.errno or E.EIO, a.value, self._pf_driver(a.pf))
            raise HostError(a.pf, message, attr="eswitch_mode", errno=exc.errno, hint=hint)
        try:
            mode = devlink.eswitch_mode(a.handle)
        except OSError as exc:
            mode = f"unreadable ({exc.strerror or exc})"
        if mode != a.value:
            raise HostError(a.pf, f"the eswitch mode reads {mode} after setting {a.value}", attr="eswitch_mode",
                            hint="check dmesg for the driver's eswitch messages")

    def _set_vf_settings(self, batch: List[SetVfSetting]) -> List[HostError]:
        """Every VF setting of a PF in one RTM_SETLINK; on a refusal, find the VF and setting, go on.

        The kernel applies the VFs in order and stops at the first failure, keeping what it
        applied: read back, name exactly the VF and setting that failed, and send the rest.
        """
        pf = batch[0].pf
        try:
            ifname, ifindex = self._netdev(pf, "vf_settings")
        except HostError as exc:
            return [exc]
        merged: Dict[int, Dict[str, Any]] = {}
        for action in batch:
            for vf, value in action.values:
                merged.setdefault(vf, {})[action.attr] = value
        # VF order, but for the rates: the plan orders them as the driver can take them (lowered first)
        first = {vf: n for action in batch if action.attr == "rate" for n, (vf, _) in enumerate(action.values)}
        pending: List[Tuple[int, Dict[str, Any]]] = sorted(merged.items(),
                                                           key=lambda item: (first.get(item[0], len(first)), item[0]))
        errors: List[HostError] = []
        links = self.host.links
        if pf in self._made and self._note:
            self._note_fresh(pf, ifname, ifindex, merged)
        while pending and not self.cancelled():
            try:
                links.set_vf_links(ifname, pending, ifindex=ifindex)
                break
            except OSError as exc:
                code = exc.errno or E.EIO
                try:
                    now = links.vf_links(ifname, ifindex=ifindex)
                except OSError:
                    now = {}
                for n, (vf, change) in enumerate(pending):
                    current = now.get(vf)
                    failed = next((attr for attr in VF_LINK_ATTRS if attr in change and
                                   (current is None or current.observed(attr) != change[attr])), None)
                    if failed is None:
                        continue
                    message, hint = hints.vf_setting_error(code, failed, change[failed], pf_driver=self._pf_driver(pf),
                                                           eswitch=self._mode_quiet(pf))
                    errors.append(HostError(pf, message, vf=vf, attr=failed, errno=code, hint=hint))
                    later = VF_LINK_ATTRS[VF_LINK_ATTRS.index(failed) + 1:]
                    rest = {attr: change[attr] for attr in later if attr in change}
                    # the rest again, in a new request, under the rule the settings carry
                    pending = ([(vf, rest)] if rest else []) + pending[n + 1:] if self._may(batch[0], SEND_REST) else []
                    break
                else:  # everything reads as asked, yet the request failed: say so once, stop
                    message, hint = hints.netlink_error(f"setting VF settings through {ifname}", code)
                    errors.append(HostError(pf, message, attr="vf_settings", errno=code, hint=hint))
                    break
        return errors

    def _set_vf_guids(self, a: SetVfGuids) -> List[HostError]:
        """Every GUID of the action in one RTM_SETLINK (each GUID its own IFLA_VF_INFO: vfinfo.py); read
        back by the verification that ends the run (netlink's VF info, ndo_get_vf_guid)."""
        merged: Dict[int, Dict[str, Any]] = {}
        for vf, key, guid in a.values:
            merged.setdefault(vf, {})[key] = guid
        try:
            ifname, ifindex = self._netdev(a.pf, "node_guid")
        except HostError as exc:
            return [exc]
        if a.pf in self._made and self._note:
            self._note_fresh(a.pf, ifname, ifindex, merged)  # the GUIDs the new VFs came with: what undo puts back
        try:
            self.host.links.set_vf_links(ifname, sorted(merged.items()), ifindex=ifindex)
        except OSError as exc:
            code = exc.errno or E.EIO
            return [HostError(a.pf, f"setting the InfiniBand GUIDs of VF(s) through {ifname} failed: "
                                    f"{exc.strerror or exc}", attr="node_guid", errno=code,
                              hint="GUIDs are taken only by an InfiniBand PF's IPoIB netdev (mlx5_core with "
                                   "ib_ipoib); check `ip -d link show " + ifname + "` and dmesg")]
        return []

    def _note_fresh(self, pf: str, ifname: str, ifindex: Optional[int], merged: Dict[int, Dict[str, Any]]) -> None:
        """The settings the kernel gave the VFs this run created, before the run changes them: what
        undoing the change puts back if a later desired state keeps the VFs but drops the setting."""
        try:
            now = self.host.links.vf_links(ifname, ifindex=ifindex)
        except OSError:
            return  # the request that follows fails too, and says why
        fresh = self.fresh.setdefault(pf, {})
        for vf, change in merged.items():
            current = now.get(vf)
            if current is None:
                continue
            for attr in change:
                have = current.observed(attr)
                if have is not None:
                    fresh.setdefault(str(vf), {}).setdefault(attr, list(have) if isinstance(have, tuple) else have)

    def _mode_quiet(self, pf: str) -> Optional[str]:
        handle = f"pci/{pf}" if self.sysfs.is_pci(pf) else f"{self.sysfs.pf_bus(pf)}/{pf}"
        try:
            return self.host.devlink.eswitch_mode(handle)
        except OSError:
            return None

    def _set_vf_mtu(self, a: SetVfMtu) -> None:
        sysfs = self.sysfs
        vf = self._vf_pci(a.pf, a.vf)

        def netdev() -> Tuple[Optional[str], Optional[int]]:  # as it is now: udev renames a VF's netdev after its probe
            names, ifindex = device_netdevs(self.host, PCI_DEVICES, vf)
            return (names[0] if names else None), ifindex

        if not self._wait(lambda: netdev()[0] is not None, self._deadline()):
            raise HostError(a.pf, f"{vf} has no netdev to set MTU {a.value} on (bound to "
                            f"{sysfs.device_driver(vf) or 'no driver'})", vf=a.vf, attr="mtu", errno=E.ENODEV,
                            hint="a VF MTU needs a network driver on the VF (iavf, mlx5_core, ...)")
        name, ifindex = netdev()
        ifname = name or ""
        if a.pf in self._made and self._note:
            had = sysfs.read_int(PCI_DEVICES, vf, "net", ifname, "mtu")
            if had is not None:
                self.fresh.setdefault(a.pf, {}).setdefault(str(a.vf), {}).setdefault("mtu", had)
        try:
            self.host.links.set_mtu(ifname, a.value, ifindex=ifindex)
        except OSError as exc:
            message, hint = hints.netlink_error(f"setting {ifname}'s MTU to {a.value}", exc.errno or E.EIO)
            raise HostError(a.pf, message, vf=a.vf, attr="mtu", errno=exc.errno, hint=hint)
        ifname = netdev()[0] or ifname
        mtu = sysfs.read_int(PCI_DEVICES, vf, "net", ifname, "mtu")
        if mtu != a.value:
            raise HostError(a.pf, f"{ifname}'s MTU reads {mtu} after setting {a.value}", vf=a.vf, attr="mtu",
                            hint="check the VF driver's max MTU and the PF's MTU")
