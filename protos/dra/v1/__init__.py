"""Generated kubelet API modules; see protos/generate.sh."""
