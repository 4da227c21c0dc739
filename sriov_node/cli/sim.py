"""sim create | hold | release: simulated hosts for tests and demos."""

from __future__ import annotations

from typing import List, Optional

import typer

from sriov_node.cli.app import sim_app
from sriov_node.errors import EXIT_INVALID

@sim_app.command("create")
def sim_create(
    directory: str = typer.Argument(..., help="Where to build the simulated host."),
    nic: List[str] = typer.Option(["x710:2"], "--nic", help="MODEL[:PFS[:TOTALVFS]]; models: x710 e810 cx5 i350 82599 nvme hisi-zip."),
    iommu: str = typer.Option("on", "--iommu", help="on|off"),
    bios_sriov: str = typer.Option("on", "--bios-sriov", help="off: firmware hides the SR-IOV capability"),
    no_mmio: bool = typer.Option(False, "--no-mmio", help="No MMIO for VF BARs: enabling VFs fails with ENOMEM."),
    vfio_loaded: bool = typer.Option(False, "--vfio-loaded", help="Start with vfio-pci already loaded."),
    cpu: str = typer.Option("intel", "--cpu", help="intel|amd: /proc/cpuinfo's vendor (and DMAR or IVRS)."),
    bios_iommu: str = typer.Option("on", "--bios-iommu", help="off: no DMAR/IVRS table (IOMMU off in the BIOS)."),
    cmdline: Optional[str] = typer.Option(None, "--cmdline", help="The running kernel's IOMMU arguments "
                                                                  "[default: intel_iommu=on iommu=pt with --iommu on]."),
    bootloader: str = typer.Option("debian", "--bootloader", help="debian (/etc/default/grub) | rhel (BLS "
                                                                  "entries, grubenv, /etc/kernel/cmdline) | none"),
    boot_args: Optional[str] = typer.Option(None, "--boot-args", help="IOMMU arguments the boot loader gives the "
                                                                      "next boot [default: the running ones]."),
    no_ari: bool = typer.Option(False, "--no-ari", help="The ports above the NICs lack ARI forwarding."),
    networkmanager: bool = typer.Option(False, "--networkmanager", help="NetworkManager is running."),
    missing_module: List[str] = typer.Option([], "--missing-module", help="A driver with no module for this "
                                                                           "kernel (repeatable)."),
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
                           mmio=not no_mmio, vfio_loaded=vfio_loaded, platform=platform)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)
    typer.echo(f"simulated host at {root}: {', '.join(nic)}")


@sim_app.command("hold")
def sim_hold(
    directory: str,
    vf: str = typer.Argument(..., help="VF PCI address bound to vfio-pci."),
    pid: int = typer.Option(4242, "--pid"),
    comm: str = typer.Option("qemu-kvm", "--comm"),
) -> None:
    """Pretend a process holds the VF's /dev/vfio group open (like a running VM)."""
    from sriov_node.sim.kernel import SimKernel

    try:
        SimKernel(directory).hold_vf(vf, pid, comm)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INVALID)


@sim_app.command("release")
def sim_release(directory: str, pid: int = typer.Option(4242, "--pid")) -> None:
    """Undo `sim hold`."""
    from sriov_node.sim.kernel import SimKernel

    SimKernel(directory).release(pid)


# click's UsageError (typer vendors click from 0.28 on; earlier versions import it): BadParameter's base
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
