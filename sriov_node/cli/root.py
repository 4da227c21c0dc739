"""Where the program opens its root: the one opener for every command, script and test.

A root made by `sriov-node sim create` (its marker file at the top) is the simulated kernel's,
built here from sriov_node.sim; any other is the host layer's (`host.open_host`: the live kernel,
or a read-only captured tree). Nothing below the CLI imports the simulator.
"""

from __future__ import annotations

import os

from sriov_node.host import Host, open_host


def is_sim_root(root: str) -> bool:
    """A root made by `sriov-node sim create`."""
    from sriov_node.sim import MARKER  # the package's __init__ only: no model is loaded

    return os.path.isfile(os.path.join(os.path.abspath(root), MARKER))


def open_root(root: str = "/") -> Host:
    """The simulated kernel for a `sim create` tree (its writes go through the model, a killed
    writer's half-done write rolled back first), else `host.open_host(root)`."""
    if is_sim_root(root):
        from sriov_node.sim.host import open_sim_host  # only simulated roots load the model

        return open_sim_host(root)
    return open_host(root)
