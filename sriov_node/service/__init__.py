"""The systemd side: `boot` (the oneshot before network-pre.target), the uevent-driven daemon,
its uevent sources, sd_notify and the journal, and the NetworkManager udev rule.

Imports the engine and the views; nothing imports it but `cli/`.
"""
