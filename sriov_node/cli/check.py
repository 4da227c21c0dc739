"""check: IOMMU, BIOS/firmware SR-IOV, MMIO, kernel arguments, modules; --fix for the boot loader."""
