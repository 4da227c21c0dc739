"""export, set, unset, capture, metrics: from one node to the cluster."""
