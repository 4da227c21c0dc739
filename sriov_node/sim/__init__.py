"""A simulated kernel: a sysfs-shaped tree on disk whose writes obey shared kernel rules.

Production code reaches it only through sriov_node.host (a root carrying the marker file).
build.py lays a host out (`sriov-node sim create`); kernel.py and net.py answer its writes.
"""
