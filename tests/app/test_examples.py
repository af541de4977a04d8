"""The example pods (deploy/examples) run their own script: numanet-app reads a pod view
built like the example's (its network, its hugepages volume and request), and a stand-in
dpdk-testpmd records the words it was started with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.podview import PodView

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {
    # example -> (manifest, pool, kind, container role, vdev start)
    "ovs": ("ovs/testpmd-vhostuser.yaml", "vhostuser-ovs", "vhost-user", "server",
            "--vdev=virtio_user0,path=/run/numanet/vhostuser-ovs/vhostuser-ovs-n1-000/sock,"
            "server=1,mac=02:00:00:00:00:01"),
    "vpp": ("vpp/testpmd-memif.yaml", "memif-vpp", "memif", "slave",
            "--vdev=net_memif0,role=client,id=0,socket=/run/numanet/memif-vpp/memif-vpp-n1-000/"
            "sock,socket-abstract=no,mac=02:00:00:00:00:01"),
}


def _pod_spec(example: str) -> dict:
    return yaml.safe_load((REPO / "deploy" / "examples" / EXAMPLES[example][0]).read_text())


def _run_example(example: str, tmp_path: Path, cpus: str):
    pod_spec = _pod_spec(example)
    _, pool, kind, role, _ = EXAMPLES[example]
    (container,) = pod_spec["spec"]["containers"]
    network, _, ifname = pod_spec["metadata"]["annotations"][
        "k8s.v1.cni.cncf.io/networks"].partition("@")
    assert network == pool
    pod = PodView(tmp_path / "pod", container=container["name"])
    pod.slot(pool, kind, role, node=1, ifname=ifname, mac="02:00:00:00:00:01")
    (mount,) = container["volumeMounts"]
    request = container["resources"]["requests"]["hugepages-2Mi"]
    assert request == "1Gi"
    pod.hugepages(mount["mountPath"], "2M", request_mib=1024)
    pod.write()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "testpmd-args"
    stub = bin_dir / "dpdk-testpmd"
    stub.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n")
    stub.chmod(0o755)
    (bin_dir / "numanet-app").symlink_to(Path(sys.executable).parent / "numanet-app")
    env = {"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOSTNAME": "pod",
           "NUMANET_APP_ROOT": str(pod.root), "NUMANET_APP_CPUS": cpus, **pod.env}
    script = container["args"][0]
    assert container["command"] == ["/bin/sh", "-c"]
    done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    words = record.read_text().splitlines() if record.exists() else None
    return done, words


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_example_starts_testpmd_with_numanet_apps_words(example, tmp_path):
    done, words = _run_example(example, tmp_path, "4-5")
    assert done.returncode == 0, done.stderr
    device = f"{EXAMPLES[example][1]}-n1-000"
    assert words == [
        "-l", "4-5", f"--file-prefix=numanet-{device}", "--huge-dir=/hugepages",
        "--socket-mem=0,1024", *(["--single-file-segments"] if example == "ovs" else []),
        "--no-pci", EXAMPLES[example][4], "--iova-mode=va",
        "--", "--forward-mode=macswap", "--auto-start", "--stats-period=10",
        "--total-num-mbufs=8192", "--nb-cores=1"]
    # `numanet-app interfaces` showed the slot in the pod's log first.
    assert f"  device  {device} (pool {EXAMPLES[example][1]})\n" in done.stdout


@pytest.mark.parametrize("example", EXAMPLES)
def test_a_misaligned_pod_stops_before_testpmd_saying_why(example, tmp_path):
    done, words = _run_example(example, tmp_path, "0-1")
    assert done.returncode == 2 and words is None
    assert "are not on the NUMA node of its interfaces (1)" in done.stderr
    assert "numanet-app: to fix:" in done.stderr
