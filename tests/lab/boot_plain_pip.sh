# LAB_PRE for tests/lab/test_boot_plain_lab.py: runs in the guest, as root, in the repository, just
# before systemd starts. Installs sriov-node as a user without a compiler would: a venv in /opt and a
# plain `pip install` (no extras, so no systemd-python), from wheels the test built of this checkout
# ($SRIOV_LAB_WHEELS: the guest has no network); then scripts/install --bin with that venv, the
# config the test chose, node_exporter's textfile directory as its package makes it, and a watchdog.
set -eu
/usr/bin/python3 -m venv /opt/sriov-node
/opt/sriov-node/bin/pip install -q --disable-pip-version-check --no-index --find-links "$SRIOV_LAB_WHEELS" sriov-node
if (cd / && /opt/sriov-node/bin/python -c 'from systemd import daemon') 2>/dev/null; then
  echo "boot_plain_pip: systemd-python is importable in the plain venv" >&2
  exit 1
fi
bash scripts/install --bin /opt/sriov-node/bin/sriov-node
install -m 0644 "$SRIOV_LAB_CONFIG" /etc/sriov-node/config.toml
install -d -m 0755 /var/lib/node_exporter/textfile
# WATCHDOG=1 is part of the protocol the daemon speaks itself: systemd kills the agent if it stops
mkdir -p /etc/systemd/system/sriov-node-agent.service.d
printf '[Service]\nWatchdogSec=10s\n' > /etc/systemd/system/sriov-node-agent.service.d/50-watchdog.conf
