"""Stand-ins for the kubelet APIs numanet talks to, written from their documented behaviour.

``KubeletStandin`` plays the device manager (registration, ListAndWatch, preferred
allocation, Allocate, restarts); ``dra.DraKubeletStandin`` the plugin watcher and the DRA
manager (registration of DRA plugins, Prepare/Unprepare of claims, restarts);
``podresources.PodResourcesStandIn`` serves the pod-resources API from what they gave
(``KubeletStandin.pod_allocations``, ``DraKubeletStandin.pod_dynamic_resources``).
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
