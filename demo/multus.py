"""Playing Multus: exec the real CNI executable the way Multus calls a delegate.

For a pod whose network names a resource, Multus puts the device ID the kubelet
allocated into the delegate's config (``deviceID``) and asks it to write the
device-info file at ``runtimeConfig.CNIDeviceInfoFile``; the pod's identity travels in
``CNI_ARGS`` (``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``, ...). The plugin's answer is the
CNI result on stdout, or a CNI error document with a non-zero exit.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_VERSION = "1.1.0"


class CniFailed(RuntimeError):
    """The plugin answered with a CNI error; the message carries code, msg and details."""


@dataclass(frozen=True)
class Attachment:
    """One network attachment of one pod sandbox."""

    namespace: str
    pod: str
    pod_uid: str
    container_id: str  # the sandbox ID
    netns: Path
    ifname: str
    device_id: str
    devinfo_file: Path

    def cni_args(self) -> str:
        return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.pod};"
                f"K8S_POD_INFRA_CONTAINER_ID={self.container_id};K8S_POD_UID={self.pod_uid}")


@dataclass(frozen=True)
class Network:
    """The delegate config, as a NetworkAttachmentDefinition would carry it."""

    name: str
    resource: str
    subnet: str
    ipam_data_dir: Path

    def netconf(self, attachment: Attachment) -> dict[str, Any]:
        return {
            "cniVersion": CNI_VERSION,
            "name": self.name,
            "type": "numanet",
            "resourceName": self.resource,
            "ipam": {"type": "host-local", "subnet": self.subnet,
                     "dataDir": str(self.ipam_data_dir)},
            "deviceID": attachment.device_id,
            "runtimeConfig": {"CNIDeviceInfoFile": str(attachment.devinfo_file)},
        }


def call(executable: str, command: str, network: Network, attachment: Attachment,
         cni_path: Path, socket: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run the plugin once; the parsed result (empty for DEL), or CniFailed."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": attachment.container_id,
        "CNI_NETNS": str(attachment.netns),
        "CNI_IFNAME": attachment.ifname,
        "CNI_ARGS": attachment.cni_args(),
        "CNI_PATH": str(cni_path),
        "NUMANET_CNI_SOCKET": str(socket),
    }
    stdin = json.dumps(network.netconf(attachment)).encode()
    try:
        done = subprocess.run([executable], input=stdin, env=env, capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CniFailed(f"numanet-cni {command} for {attachment.namespace}/{attachment.pod} "
                        f"did not answer in {timeout:.0f} s") from None
    out = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0:
        try:
            error = json.loads(out)
            text = f"code {error.get('code')}: {error.get('msg')} ({error.get('details', '')})"
        except ValueError:
            text = out or done.stderr.decode(errors="replace").strip()
        raise CniFailed(f"numanet-cni {command} for {attachment.namespace}/{attachment.pod} "
                        f"device_id={attachment.device_id} failed: {text}")
    if not out:
        return {}
    try:
        result: dict[str, Any] = json.loads(out)
    except ValueError:
        raise CniFailed(f"numanet-cni {command} printed something that is not JSON: "
                        f"{out[:200]!r}") from None
    return result


def leases(ipam_data_dir: Path, network: str) -> list[str]:
    """host-local's leases of a network: one file per address, named by it."""
    directory = ipam_data_dir / network
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir()
                  if p.name[:1].isdigit() or ":" in p.name)
