"""Platform prerequisites (IOMMU, BIOS/firmware SR-IOV, MMIO, kernel arguments, modules, boot loader)."""
