"""numanet cni."""
