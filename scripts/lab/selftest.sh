#!/bin/bash
# Guest-side self-test of the kernel lab: `scripts/kernel-lab --selftest` runs it in the guest
# (works with LAB_IOMMU=on or off). Prints one line per check ("ok"/"FAIL") plus timings; exit 0
# when all checks pass. Also a worked example of driving the lab's SR-IOV hardware:
#   NVMe PF 0000:01:00.0 (4 VFs), NVMe PF 0000:02:00.0 (64 VFs), vfio-pci, netdevsim.
set -u
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
now() { echo "$EPOCHREALTIME"; }
dt()  { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2fs", b - a }'; }
IOMMU=${LAB_IOMMU:-on}
echo "kernel=$(uname -r) iommu=$IOMMU uptime=$(cut -d' ' -f1 /proc/uptime)s cpus=$(nproc)"
echo "cmdline: $(cat /proc/cmdline)"

echo "--- IOMMU"
groups=$(find /sys/kernel/iommu_groups -mindepth 1 -maxdepth 1 | wc -l)
echo "iommu_groups=$groups iommu_devices=$(find /sys/class/iommu -mindepth 1 -printf '%f ' 2>/dev/null)"
if [ "$IOMMU" = on ]; then
  check "IOMMU groups exist" [ "$groups" -gt 0 ]
  check "/sys/class/iommu/dmar0 exists" [ -e /sys/class/iommu/dmar0 ]
else
  check "no IOMMU groups (IOMMU off)" [ "$groups" -eq 0 ]
fi

echo "--- NVMe SR-IOV"
t=$(now); modprobe nvme; echo "modprobe nvme: $(dt "$t")"
wait_driver() {  # nvme probes asynchronously: wait for the PF's driver link (max 30 s)
  local _
  for _ in $(seq 300); do [ -e "$1/driver" ] && return 0; sleep 0.1; done
  return 1
}
enable_vfs() {   # $1 PF sysfs dir, $2 count; prints timing; checks the virtfn links
  local P=$1 n=$2 t links
  echo 0 > "$P/sriov_drivers_autoprobe"   # the emulated VFs have no queues: nvme would fail on them
  t=$(now)
  echo "$n" > "$P/sriov_numvfs" || { bad "${P##*/}: echo $n > sriov_numvfs"; return 1; }
  links=$(find "$P/" -maxdepth 1 -name 'virtfn*' | wc -l)   # $P is a symlink: "$P/"
  echo "${P##*/}: enable $n VFs: $(dt "$t") numvfs=$(cat "$P/sriov_numvfs") virtfn_links=$links"
  check "${P##*/}: $n virtfn links after the numvfs write" [ "$links" -eq "$n" ]
  if [ "$links" -ne "$n" ]; then  # diagnostics for the rare "numvfs write succeeded, no VFs" case
    sleep 2; echo "  after 2 s: numvfs=$(cat "$P/sriov_numvfs") virtfn_links=$(find "$P/" -maxdepth 1 -name 'virtfn*' | wc -l)"
    dmesg | tail -n 8 | sed 's/^/  dmesg: /'
  fi
}
declare -A WANT=([0000:01:00.0]=4 [0000:02:00.0]=64)
for pf in 0000:01:00.0 0000:02:00.0; do
  P=/sys/bus/pci/devices/$pf
  if [ ! -e "$P" ]; then bad "$pf exists"; continue; fi
  t=$(now); wait_driver "$P"
  echo "$pf: $(cat "$P/vendor"):$(cat "$P/device") driver=$(basename "$(readlink "$P/driver")") after $(dt "$t")" \
    "totalvfs=$(cat "$P/sriov_totalvfs") nvme=$(ls "$P/nvme" 2>/dev/null)"
  check "$pf sriov_totalvfs=${WANT[$pf]}" [ "$(cat "$P/sriov_totalvfs")" = "${WANT[$pf]}" ]
  enable_vfs "$P" "${WANT[$pf]}"
done
P2=/sys/bus/pci/devices/0000:02:00.0
echo "0000:02:00.0 VFs: $(basename "$(readlink "$P2/virtfn0")") .. $(basename "$(readlink "$P2/virtfn63")")"

echo "--- vfio-pci"
groupnodes() { find /dev/vfio -mindepth 1 -maxdepth 1 -name '[0-9]*' -printf '%f '; }
modprobe vfio-pci
P=/sys/bus/pci/devices/0000:01:00.0
VF=$(basename "$(readlink "$P/virtfn0")")
echo vfio-pci > "/sys/bus/pci/devices/$VF/driver_override"
probe=ok; echo "$VF" 2>/dev/null > /sys/bus/pci/drivers_probe || probe=failed
drv=$(basename "$(readlink "/sys/bus/pci/devices/$VF/driver" 2>/dev/null)" 2>/dev/null)
grp=$(basename "$(readlink "/sys/bus/pci/devices/$VF/iommu_group" 2>/dev/null)" 2>/dev/null)
echo "$VF: drivers_probe write $probe driver=${drv:-none} iommu_group=${grp:-none}"
ls -l /dev/vfio
if [ "$IOMMU" = on ]; then
  check "$VF bound to vfio-pci" [ "$drv" = vfio-pci ]
  check "/dev/vfio/${grp:-?} exists" [ -c "/dev/vfio/${grp:-none}" ]
  # fork-free loops (a fork+exec costs ~50 ms under TCG): the VF address from its uevent file
  vfs=()
  for v in "$P2"/virtfn*; do
    while IFS='=' read -r k val; do [ "$k" = PCI_SLOT_NAME ] && vfs+=("$val"); done <"$v/uevent"
  done
  t=$(now); n=0
  for v in "${vfs[@]}"; do
    echo vfio-pci > "/sys/bus/pci/devices/$v/driver_override"
    echo "$v" > /sys/bus/pci/drivers_probe && n=$((n + 1))
  done
  echo "bind all ${#vfs[@]} VFs of 0000:02:00.0 to vfio-pci: $(dt "$t") ($n ok, $(groupnodes | wc -w) group nodes)"
  check "64 VFs of 0000:02:00.0 bound to vfio-pci" [ "$n" -eq 64 ]
  t=$(now)
  for v in "${vfs[@]}"; do echo "$v" > /sys/bus/pci/drivers/vfio-pci/unbind; done
  echo "unbind the 64 VFs from vfio-pci: $(dt "$t")"
else
  check "$VF NOT bound to vfio-pci (no IOMMU)" [ "$drv" != vfio-pci ]
  check "no /dev/vfio/<group> node" [ -z "$(groupnodes)" ]
  dmesg | grep -i vfio | tail -3
fi
[ ! -e "/sys/bus/pci/devices/$VF/driver" ] || echo "$VF" > "/sys/bus/pci/devices/$VF/driver/unbind"
t=$(now); echo 0 > "$P2/sriov_numvfs"; echo "0000:02:00.0: disable 64 VFs: $(dt "$t")"
check "0000:02:00.0 VFs gone" [ -z "$(find "$P2/" -maxdepth 1 -name 'virtfn*')" ]

echo "--- netdevsim"
t=$(now)
if modprobe netdevsim && echo "10 1" > /sys/bus/netdevsim/new_device; then
  D=/sys/bus/netdevsim/devices/netdevsim10
  sleep 0.2; ND=$(find "$D/net/" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -1)
  echo 4 > "$D/sriov_numvfs"
  ip link set dev "$ND" vf 0 mac 02:00:00:00:00:01 vlan 10 trust on
  echo "netdevsim: $ND numvfs=$(cat "$D/sriov_numvfs") in $(dt "$t")"; ip link show dev "$ND" | grep 'vf 0'
  check "netdevsim: 4 VFs, vf 0 configured" bash -c "ip link show dev $ND | grep -q 'vf 0 .*02:00:00:00:00:01 .*vlan 10'"
else
  bad "modprobe netdevsim / new_device"
fi

echo "--- tools"
check "strace works" bash -c 'strace -f -e trace=execve true 2>&1 | grep -q "execve(\"/usr/bin/true\""'
check "udevadm present" udevadm --version
t=$(now); python3 -c 'import sys; print(sys.version.split()[0])'; echo "python3 -c: $(dt "$t")"
if [ -n "${LAB_OUT:-}" ]; then
  uname -a > "$LAB_OUT/selftest-uname.txt"
  check "wrote \$LAB_OUT/selftest-uname.txt" [ -s "$LAB_OUT/selftest-uname.txt" ]
fi
echo "--- $fails failure(s); uptime=$(cut -d' ' -f1 /proc/uptime)s"
[ "$fails" -eq 0 ]
