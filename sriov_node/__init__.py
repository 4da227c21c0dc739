"""sriov-node: provision SR-IOV Virtual Functions from a declarative desired state."""

__version__ = "0.1.0"
