"""Stand-ins for the kubelet APIs numanet talks to, written from their documented behaviour.

``KubeletStandin`` plays the device manager (registration, ListAndWatch, preferred
allocation, Allocate, restarts); ``podresources.PodResourcesStandIn`` serves the
pod-resources API from what it allocated (``KubeletStandin.pod_allocations``).
"""

from demo.kubelet_standin.kubelet import (
    Allocation,
    ContainerSpec,
    DeviceRecord,
    KubeletStandin,
    Registration,
    StandinError,
)

__all__ = [
    "Allocation",
    "ContainerSpec",
    "DeviceRecord",
    "KubeletStandin",
    "Registration",
    "StandinError",
]
