"""A simulated kernel: a sysfs-shaped tree on disk whose writes obey shared kernel rules.

Production code never imports it: the CLI, where the program starts, opens a root carrying the
marker file with `sim.host.open_sim_host` (sriov_node.cli.root.open_root), and the rest sees only
the Host it returns. build.py lays a host out (`sriov-node sim create`); kernel.py (the tree,
the PCI and driver rules, the faults) and net.py answer its writes.
"""

# A file at the top of a root made by `sriov-node sim create`: writes go through the kernel model.
MARKER = ".sriov-node-sim.json"
