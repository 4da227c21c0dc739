"""boot and daemon: the systemd entry points (a oneshot at boot, a udev-driven daemon)."""
