"""numanet as a DRA driver: slots published as ResourceSlices (resource.k8s.io/v1), claims
prepared by a kubelet DRA plugin through the device plugin's own Allocate code."""
