#!/bin/sh
# sriov-node in a Kubernetes pod (deploy/kubernetes/sriov-node.yaml): install this node's desired
# state from the ConfigMap as the host's config, apply it (so it becomes a generation, as a
# `sriov-node apply` on the host would), then run the agent on the host's root until SIGTERM.
#
#   NODE_NAME           this node (the downward API's spec.nodeName): the ConfigMap key
#                       <NODE_NAME>.toml, else default.toml
#   SRIOV_NODE_ROOT     where the host's / is mounted [default: /host]; lock, state, generations,
#                       /sys, /proc, /dev and the device-plugin file are the host's
#   SRIOV_NODE_CONFIGS  where the ConfigMap is mounted [default: /etc/sriov-node-configmap]
#   SRIOV_NODE_CONFIG   the host's config file as this container sees it [default:
#                       /etc/sriov-node/config.toml: the host's /etc/sriov-node is mounted at the
#                       same path, so a generation names the same file on the host and in the pod]
#
# Exit codes: 2 no key for this node or an invalid config, 1 the config does not fit this host
# (both before anything is written: the host's config and VFs stay as they are); otherwise the
# agent's (0 after SIGTERM).
set -eu
root=${SRIOV_NODE_ROOT:-/host}
configs=${SRIOV_NODE_CONFIGS:-/etc/sriov-node-configmap}
config=${SRIOV_NODE_CONFIG:-/etc/sriov-node/config.toml}
node=${NODE_NAME:-}

say() { printf 'sriov-node-kubernetes: %s\n' "$*" >&2; }

# SIGTERM before the agent starts (the kubelet stopping the pod): passed on to the running command,
# which stops between two actions as `apply` does on a terminal; then exit 143, the agent not started.
stopping=
child=
trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM INT
sn() {
  sriov-node --root "$root" "$@" &
  child=$!
  rc=0
  wait "$child" || rc=$?
  while kill -0 "$child" 2>/dev/null; do  # wait returned for the trap: wait for the command itself
    rc=0
    wait "$child" || rc=$?
  done
  child=
  if [ -n "$stopping" ]; then
    say "stopped by a signal (the command exited $rc); the agent is not started"
    exit 143
  fi
  return "$rc"
}

if [ -z "$node" ]; then
  say "NODE_NAME is not set: give the container env NODE_NAME from fieldRef spec.nodeName"
  exit 2
fi
if [ -f "$configs/$node.toml" ]; then
  src=$configs/$node.toml
elif [ -f "$configs/default.toml" ]; then
  src=$configs/default.toml
else
  say "the ConfigMap in $configs has neither $node.toml nor default.toml: add a key for this node or a default"
  exit 2
fi
key=$(basename "$src")
say "node $node: desired state from the ConfigMap's key $key"

# 1. Valid, and does every block fit this host? Nothing is written otherwise: the pod fails, the
#    DaemonSet's roll-out stops at it (maxUnavailable), the host keeps its config and VFs.
rc=0
sn --config "$src" validate >&2 || rc=$?
if [ "$rc" -ne 0 ]; then
  if [ "$rc" -eq 2 ]; then what="is not a valid config"; else what="does not fit this host"; fi
  say "$key $what (exit $rc); nothing was written: the host's config and VFs are as they were"
  exit "$rc"
fi

# 2. Install it as the host's config when its bytes differ (atomically: a reader sees the old file
#    or the new one; the old one kept as config.toml.bak).
if ! cmp -s "$src" "$config"; then
  if [ -L "$config" ]; then
    say "$config is a symbolic link on the host; the DaemonSet writes the file itself: replace the link by a file"
    exit 2
  fi
  dir=$(dirname "$config")
  mkdir -p "$dir"
  tmp="$dir/.$(basename "$config").kubernetes.$$"
  cp "$src" "$tmp"
  chmod 0644 "$tmp"
  sync "$tmp"
  if [ -f "$config" ]; then cp -p "$config" "$config.bak"; fi
  mv -f "$tmp" "$config"
  say "installed $key as $config"
fi

# 3. Converge now and record a generation (none when the host already is at these bytes). A PF that
#    fails is retried by the agent; a run refused because VFs are in use leaves the file ahead of
#    the applied generation, so `status --exit-code` (the readiness probe) stays 1 until it applies.
rc=0
sn --config "$config" apply >&2 || rc=$?
case $rc in
  0) say "converged to $key" ;;
  3) say "apply refused (VFs in use, see above): the node keeps its applied generation and is not ready" ;;
  *) say "apply exited $rc (see above): the agent keeps converging" ;;
esac

# 4. The agent: follows generations (a host-side set, rollback or checkpoint too), repairs on kernel
#    events, writes [device_plugin] config_file once converged; SIGTERM stops it between two actions.
exec sriov-node --root "$root" --config "$config" daemon
