# LAB_PRE for the systemd-boot lab tests: runs in the guest, as root, in the repository, just
# before systemd starts. Installs sriov-node the way a user does (scripts/install), with the
# config the test chose (SRIOV_LAB_CONFIG, exported through LAB_ENV), and a probe unit that
# records the VFs at the moment network-pre.target is reached.
set -eu
bash scripts/install --bin "$PWD/.venv/bin/sriov-node"
install -m 0644 "$SRIOV_LAB_CONFIG" /etc/sriov-node/config.toml
. "$(dirname "$0")/vf_probe_unit.sh"
