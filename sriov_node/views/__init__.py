"""What the engine's values look like to others: status, plans and progress for a person, the
textfile-collector metrics, the SR-IOV device plugin's config. Views read; they never write to
the kernel.
"""
