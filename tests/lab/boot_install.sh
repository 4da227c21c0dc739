# LAB_PRE for the systemd-boot lab tests: runs in the guest, as root, in the repository, just
# before systemd starts. Installs sriov-node the way a user does (scripts/install), with the
# config the test chose (SRIOV_LAB_CONFIG, exported through LAB_ENV), and a probe unit that
# records the VFs at the moment network-pre.target is reached.
set -eu
bash scripts/install --bin "$PWD/.venv/bin/sriov-node"
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
