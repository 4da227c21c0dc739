# Sourced by the LAB_PRE scripts of the systemd-boot lab tests: a probe unit ordered after
# network-pre.target that records the VFs (PF, virtfnN, VF, driver) the moment it is reached,
# in /run/vfs-at-network-pre.
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
