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
cat > /etc/systemd/system/vf-probe.service <<'UNIT'
[Unit]
Description=record the VFs at network-pre.target (sriov-node lab test)
DefaultDependencies=no
After=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for v in /sys/bus/pci/devices/*/virtfn*; do d=$(readlink -f $v); echo "$(basename $(dirname $v)) $(basename $v) $(basename $d) $(basename $(readlink $d/driver 2>/dev/null) 2>/dev/null)"; done > /run/vfs-at-network-pre'

[Install]
WantedBy=multi-user.target
UNIT
systemctl -q enable vf-probe.service
