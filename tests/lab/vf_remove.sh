# In the lab guest: which PCI functions show remove/rescan, and what a PF remove + bus rescan
# leaves (the simulated kernel models the same; tests/lab/test_vf_remove_lab.py compares).
set -u
modprobe nvme
PF=
for d in /sys/bus/pci/devices/*; do
    if [ -e "$d/sriov_totalvfs" ]; then PF=$(basename "$d"); break; fi
done
cd "/sys/bus/pci/devices/$PF" || exit 3
echo 2 > sriov_numvfs
VF1=$(basename "$(readlink virtfn1)")
echo "pf_remove=$([ -e remove ] && echo 1 || echo 0)"
echo "vf_remove=$([ -e "/sys/bus/pci/devices/$VF1/remove" ] && echo 1 || echo 0)"
echo "vf_rescan=$([ -e "/sys/bus/pci/devices/$VF1/rescan" ] && echo 1 || echo 0)"
echo 1 > remove
echo "pf_after_remove=$([ -e "/sys/bus/pci/devices/$PF" ] && echo 1 || echo 0)"
echo "vf_after_remove=$([ -e "/sys/bus/pci/devices/$VF1" ] && echo 1 || echo 0)"
echo 1 > /sys/bus/pci/rescan
echo "pf_after_rescan=$([ -e "/sys/bus/pci/devices/$PF" ] && echo 1 || echo 0)"
echo "numvfs_after_rescan=$(cat "/sys/bus/pci/devices/$PF/sriov_numvfs")"
echo "virtfns_after_rescan=$(ls "/sys/bus/pci/devices/$PF" | grep -c '^virtfn')"
echo "vf_after_rescan=$([ -e "/sys/bus/pci/devices/$VF1" ] && echo 1 || echo 0)"
