"""sim create | hold | release: simulated hosts for tests and demos."""

from __future__ import annotations

from typing import List, Optional

import typer

from sriov_node.cli.app import examples, sim_app
from sriov_node.errors import EXIT_INVALID
from sriov_node.sim.nics import NICS

@sim_app.command("create", epilog=examples("sriov-node sim create /tmp/node --nic x710:2 --nic e810:1", "sriov-node --root /tmp/node status"))
def sim_create(
    directory: str = typer.Argument(..., metavar="DIR", help="Where to build the simulated host."),
    nic: List[str] = typer.Option(["x710:2"], "--nic", metavar="MODEL[:PFS[:TOTALVFS]]", help="MODEL[:PFS[:TOTALVFS]]; models: " + " ".join(NICS) + "."),
    iommu: str = typer.Option("on", "--iommu", metavar="on|off", help="on|off"),
    bios_sriov: str = typer.Option("on", "--bios-sriov", metavar="on|off", help="off: firmware hides the SR-IOV capability"),
    no_mmio: bool = typer.Option(False, "--no-mmio", help="No MMIO for VF BARs: enabling VFs fails with ENOMEM."),
    vfio_loaded: bool = typer.Option(False, "--vfio-loaded", help="Start with vfio-pci already loaded."),
    cpu: str = typer.Option("intel", "--cpu", metavar="intel|amd", help="intel|amd: /proc/cpuinfo's vendor (and DMAR or IVRS)."),
    bios_iommu: str = typer.Option("on", "--bios-iommu", metavar="on|off", help="off: no DMAR/IVRS table (IOMMU off in the BIOS)."),
    cmdline: Optional[str] = typer.Option(None, "--cmdline", metavar="ARGS", help="The running kernel's IOMMU arguments "
                                                                  "[default: intel_iommu=on iommu=pt with --iommu on]."),
    bootloader: str = typer.Option("debian", "--bootloader", metavar="debian|rhel|none", help="debian (/etc/default/grub) | rhel (BLS "
                                                                  "entries, grubenv, /etc/kernel/cmdline) | none"),
    boot_args: Optional[str] = typer.Option(None, "--boot-args", metavar="ARGS", help="IOMMU arguments the boot loader gives the "
                                                                      "next boot [default: the running ones]."),
    no_ari: bool = typer.Option(False, "--no-ari", help="The ports above the NICs lack ARI forwarding."),
    networkmanager: bool = typer.Option(False, "--networkmanager", help="NetworkManager is running."),
    missing_module: List[str] = typer.Option([], "--missing-module", metavar="DRIVER", help="A driver with no module for this "
                                                                           "kernel (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Build anew over an existing simulated host (its config, "
                                                      "state and VFs are lost)."),
) -> None:
    """Build a simulated host (a sysfs-shaped tree whose writes obey the kernel's rules)."""
    from sriov_node.sim.build import create_host, parse_nic
    from sriov_node.sim.platform import SimPlatform

    for name, value in (("--iommu", iommu), ("--bios-sriov", bios_sriov), ("--bios-iommu", bios_iommu)):
        if value not in ("on", "off"):
            typer.echo(f"error: {name} takes on or off, not {value!r}", err=True)
            raise typer.Exit(EXIT_INVALID)
    try:
        nics = [parse_nic(n) for n in nic]
        platform = SimPlatform(cpu=cpu, bios_iommu=bios_iommu == "on", cmdline=cmdline, bootloader=bootloader,
                               boot_args=boot_args, ari=not no_ari, networkmanager=networkmanager,
                               missing_modules=tuple(missing_module))
        root = create_host(directory, nics, iommu=iommu == "on", bios_sriov=bios_sriov == "on",
                           mmio=not no_mmio, vfio_loaded=vfio_loaded, platform=platform, replace=force)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)
    typer.echo(f"simulated host at {root}: {', '.join(nic)}")


@sim_app.command("hold", epilog=examples("sriov-node sim hold /tmp/node 0000:20:02.0"))
def sim_hold(
    directory: str = typer.Argument(..., metavar="DIR", help="The simulated host."),
    vf: str = typer.Argument(..., metavar="VF", help="VF PCI address bound to vfio-pci."),
    pid: int = typer.Option(4242, "--pid", metavar="PID", help="The holder's process ID."),
    comm: str = typer.Option("qemu-kvm", "--comm", metavar="NAME", help="The holder's command name."),
) -> None:
    """Pretend a process holds the VF's /dev/vfio group open (like a running VM)."""
    from sriov_node.sim.kernel import SimKernel

    try:
        SimKernel(directory).hold_vf(vf, pid, comm)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)


@sim_app.command("release", epilog=examples("sriov-node sim release /tmp/node 0000:20:02.0",
                                             "sriov-node sim release /tmp/node 0000:20:02.0 --pid 4242"))
def sim_release(
    directory: str = typer.Argument(..., metavar="DIR", help="The simulated host."),
    vf: Optional[str] = typer.Argument(None, metavar="VF", help="The held VF's PCI address (as given to sim hold); "
                                                                "omitted: the holder --pid names, whatever it holds."),
    pid: Optional[int] = typer.Option(None, "--pid", metavar="PID", help="Only this holder [default: every holder of "
                                                                         "VF; without VF: 4242, sim hold's default]."),
) -> None:
    """Undo `sim hold`: the same shape, DIR VF [--pid PID]."""
    from sriov_node.sim.kernel import SimKernel

    sim = SimKernel(directory)
    if vf is None:
        sim.release(4242 if pid is None else pid)
        return
    try:
        holders = _holders(directory, vf)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)
    chosen = [p for p in holders if pid is None or p == pid]
    if not chosen:
        held = f"held by pid {', '.join(map(str, holders))}, not {pid}" if holders else "not held"
        typer.echo(f"note: {vf} is {held}: nothing released", err=True)
    for p in chosen:
        sim.release(p)


def _holders(directory: str, vf: str) -> "list[int]":
    """The simulated processes that hold `vf` open as `sim hold` makes them: its /dev/vfio group or /dev/uioN."""
    import os

    dev = os.path.join(directory, "sys/bus/pci/devices", vf)
    if not os.path.lexists(dev):
        raise ValueError(f"{vf}: no such PCI device in {directory} (a VF's address, e.g. 0000:20:02.0)")
    nodes = {f"/dev/{name}" for name in (os.listdir(os.path.join(dev, "uio")) if os.path.isdir(os.path.join(dev, "uio")) else [])}
    group = os.path.join(dev, "iommu_group")
    if os.path.lexists(group):
        name = os.path.basename(os.readlink(group))
        nodes |= {f"/dev/vfio/{name}", f"/dev/vfio/noiommu-{name}"}
    found = []
    proc = os.path.join(directory, "proc")
    for entry in sorted(os.listdir(proc) if os.path.isdir(proc) else [], key=lambda n: (len(n), n)):
        fds = os.path.join(proc, entry, "fd")
        if not entry.isdigit() or not os.path.isdir(fds):
            continue
        if any(os.path.islink(os.path.join(fds, fd)) and os.readlink(os.path.join(fds, fd)) in nodes
               for fd in os.listdir(fds)):
            found.append(int(entry))
    return found


# click's UsageError (typer vendors click from 0.28 on; earlier versions import it): BadParameter's base
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


@sim_app.command("reboot", epilog=examples("sriov-node sim reboot /tmp/node"))
def sim_reboot(
    directory: str = typer.Argument(..., metavar="DIR", help="The simulated host."),
) -> None:
    """Reboot the simulated host as far as the model carries a reboot: /run emptied, a new boot id, no
    network namespace but the first, ib_core loaded anew with the modprobe.d options."""
    from sriov_node.sim.rdma import reboot

    try:
        reboot(directory)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)


@sim_app.command("netns", epilog=examples("sriov-node sim netns /tmp/node 3"))
def sim_netns(
    directory: str = typer.Argument(..., metavar="DIR", help="The simulated host."),
    count: int = typer.Argument(..., metavar="COUNT", min=0, help="Network namespaces besides the first (pods)."),
) -> None:
    """Pretend COUNT network namespaces besides the first exist (pods, containers): ib_core then refuses
    a change of its netns mode (EBUSY), as rdma_compatdev_set() does."""
    from sriov_node.sim.rdma import set_network_namespaces

    try:
        set_network_namespaces(directory, count)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)
