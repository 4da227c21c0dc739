"""The simulated kernel behind the host capabilities: same interfaces, the model answers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Sequence, Tuple

from sriov_node.host import Host
from sriov_node.host.devlink import Devlink
from sriov_node.host.links import LinkListener, Links, VfChange
from sriov_node.host.modules import Modules
from sriov_node.host.paths import Root
from sriov_node.host.sysfs import Sysfs, WriteCount
from sriov_node.model import VfLinks
from sriov_node.sim.kernel import SimKernel

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.sim.net import SimNet


def _net(kernel: SimKernel) -> "SimNet":
    from sriov_node.sim.net import SimNet  # netlink and devlink answers: loaded when first asked

    return SimNet(kernel)


class SimSysfs(Sysfs):
    """Reads go to the tree (it is the state); each write goes through the kernel model."""

    probe_grace = 0.0  # the model probes synchronously

    def __init__(self, root: Root, counter: WriteCount, kernel: SimKernel):
        super().__init__(root, counter)
        self.kernel = kernel

    def _store(self, rel: str, data: bytes) -> None:
        self.kernel.write(rel, data)


class _SimNetUser:
    """Netlink and devlink answered by the model's network side, loaded on first use."""

    available = True

    def __init__(self, counter: WriteCount, kernel: SimKernel):
        super().__init__(counter)  # type: ignore[call-arg]
        self.kernel = kernel
        self._sim_net: "Optional[SimNet]" = None

    @property
    def net(self) -> "SimNet":
        if self._sim_net is None:
            self._sim_net = _net(self.kernel)
        return self._sim_net


class SimLinks(_SimNetUser, Links):
    """VF settings and MTUs on the simulated netdevs."""

    def listen(self, receive_buffer: int = 0) -> LinkListener:
        from sriov_node.sim.uevents import SimLinkSocket

        return SimLinkSocket(self.kernel.root)

    def permanent_mac(self, ifname: str) -> Optional[str]:
        return self.kernel.permanent_mac(ifname)

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        return self.kernel.altnames(ifname)

    def vf_links(self, ifname: str, ifindex: Optional[int] = None) -> Dict[int, VfLinks]:
        return self.net.vf_links(ifname, ifindex)

    def set_vf_links(self, ifname: str, changes: Sequence[VfChange], ifindex: Optional[int] = None) -> None:
        self.counter.count += 1
        self.net.set_vf_links(ifname, changes, ifindex)

    def set_mtu(self, ifname: str, mtu: int, ifindex: Optional[int] = None) -> None:
        self.counter.count += 1
        self.net.set_mtu(ifname, mtu, ifindex)


class SimDevlink(_SimNetUser, Devlink):
    """The simulated PF drivers' eswitch modes."""

    def eswitch_mode(self, handle: str) -> str:
        return self.net.eswitch_mode(handle)

    def set_eswitch_mode(self, handle: str, mode: str) -> None:
        self.counter.count += 1
        self.net.set_eswitch_mode(handle, mode)


class SimModules(Modules):
    def __init__(self, root: Root, counter: WriteCount, kernel: SimKernel):
        super().__init__(root, counter)
        self.kernel = kernel

    def load(self, name: str, timeout: float = 30.0) -> None:
        self.counter.count += 1
        self.kernel.load_module(name)

    def default_drivers(self, modalias: Optional[str], vendor: Optional[str],
                        device: Optional[str]) -> Optional[Tuple[str, ...]]:
        if vendor is None or device is None:
            return None
        return self.kernel.default_drivers(f"{vendor}:{device}")

    def default_driver(self, modalias: Optional[str], vendor: Optional[str], device: Optional[str]) -> Optional[str]:
        found = self.default_drivers(modalias, vendor, device)
        return found[0] if found else None

    def pci_aliases(self, driver: str) -> Optional[Tuple[str, ...]]:
        return self.kernel.pci_aliases(driver)


def sim_capabilities(root: Root, counter: WriteCount) -> Tuple[Sysfs, Links, Devlink, Modules]:
    kernel = SimKernel(root.root)
    kernel.recover()  # a writer killed mid-write leaves nothing half-done behind
    return (SimSysfs(root, counter, kernel), SimLinks(counter, kernel), SimDevlink(counter, kernel),
            SimModules(root, counter, kernel))


def _listener(root: str):
    def listen():
        from sriov_node.sim.uevents import SimUeventSocket

        return SimUeventSocket(root)

    return listen


def open_sim_host(root: str) -> Host:
    """The Host of a root made by `sriov-node sim create`: the model answers behind every
    capability, and its uevents are heard on the model's socket."""
    prefix = Root(root)
    return Host(prefix, "sim", *sim_capabilities(prefix, WriteCount()), uevents=_listener(prefix.root))
