"""numanet-app: the pod's side of numanet, stdlib only (Python >= 3.9).

Reads what numanet gave a container (``/run/numanet/<pool>/<deviceID>/numanet.json``, the
downward-API ``/etc/podnetinfo``, its environment, its CPUs and hugepages) and turns it
into what an app needs: a list of interfaces, DPDK EAL arguments, a VPP configuration.
It imports nothing else of numanet, so it also ships as one file (``numanet-app.pyz``).
"""
