# LAB_PRE for tests/lab/test_package_lab.py: runs in the guest, as root, just before systemd
# starts. Installs the Debian package the way apt does (dpkg; its dependencies are Debian
# packages present on the host, which the guest sees), then the config the test chose
# (SRIOV_LAB_CONFIG) and a probe unit that records the VFs when network-pre.target is reached.
set -eu
# man-db's trigger would rebuild its whole index under emulation: not what is being tested
rm -f /var/lib/man-db/auto-update
# the host is a container image whose policy-rc.d forbids maintainer scripts to (re)start
# services; a node has none, and the upgrade test needs deb-systemd-invoke to act
rm -f /usr/sbin/policy-rc.d
dpkg -i "$SRIOV_LAB_DEB"
[ ! -e /etc/sriov-node/config.toml ] || { echo "the package installed a live config" >&2; exit 1; }
install -d /etc/sriov-node
install -m 0644 "$SRIOV_LAB_CONFIG" /etc/sriov-node/config.toml
. "$(dirname "$0")/vf_probe_unit.sh"
