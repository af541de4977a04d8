"""The checked-in modules in protos/ must be exactly what protos/generate.sh produces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]


def test_generated_modules_match_proto_files(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run([str(TOP / "protos" / "generate.sh"), str(tmp_path)], check=True, env=env)
    generated = sorted(tmp_path.rglob("api_pb2*"))
    assert len(generated) == 15, generated
    stale = [
        str(path.relative_to(tmp_path))
        for path in generated
        if (TOP / path.relative_to(tmp_path)).read_bytes() != path.read_bytes()
    ]
    assert not stale, f"out of date, run `make protos`: {stale}"


@pytest.mark.parametrize(
    "module, names",
    [
        ("protos.deviceplugin.v1beta1.api_pb2_grpc", ["RegistrationStub", "DevicePluginServicer"]),
        ("protos.podresources.v1.api_pb2_grpc", ["PodResourcesListerStub"]),
        ("protos.dra.v1.api_pb2_grpc", ["DRAPluginServicer", "DRAPluginStub"]),
        ("protos.dra.v1beta1.api_pb2_grpc", ["DRAPluginServicer", "DRAPluginStub"]),
        ("protos.pluginregistration.v1.api_pb2_grpc", ["RegistrationServicer",
                                                       "RegistrationStub"]),
    ],
)
def test_services_are_generated(module: str, names: list[str]) -> None:
    imported = __import__(module, fromlist=names)
    for name in names:
        assert hasattr(imported, name)


def test_wire_compatible_field_numbers() -> None:
    from protos.deviceplugin.v1beta1 import api_pb2 as dp
    from protos.podresources.v1 import api_pb2 as pr

    # Numbers the kubelet uses; a renumbering would silently break the wire format.
    assert dp.ContainerAllocateResponse.DESCRIPTOR.fields_by_name["cdi_devices"].number == 5
    assert dp.ContainerPreferredAllocationRequest.DESCRIPTOR.fields_by_name[
        "allocation_size"
    ].number == 3
    assert dp.Device.DESCRIPTOR.fields_by_name["topology"].number == 3
    assert pr.ContainerResources.DESCRIPTOR.fields_by_name["devices"].number == 2
    assert pr.GetPodResourcesRequest.DESCRIPTOR.fields_by_name["pod_namespace"].number == 2
    assert dp.DESCRIPTOR.package == "v1beta1" and pr.DESCRIPTOR.package == "v1"


def test_dra_and_registration_wire_names() -> None:
    """The kubelet calls /k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/... and
    /pluginregistration.Registration/...: the packages and numbers must be upstream's."""
    from protos.dra.v1 import api_pb2 as dra_v1
    from protos.dra.v1beta1 import api_pb2 as dra_v1beta1
    from protos.pluginregistration.v1 import api_pb2 as reg

    assert dra_v1.DESCRIPTOR.package == "k8s.io.kubelet.pkg.apis.dra.v1"
    assert dra_v1beta1.DESCRIPTOR.package == "k8s.io.kubelet.pkg.apis.dra.v1beta1"
    assert reg.DESCRIPTOR.package == "pluginregistration"
    for module in (dra_v1, dra_v1beta1):
        assert module.Device.DESCRIPTOR.fields_by_name["cdi_device_ids"].number == 4
        assert module.Claim.DESCRIPTOR.fields_by_name["uid"].number == 2
        assert module.NodePrepareResourceResponse.DESCRIPTOR.fields_by_name["error"].number == 2
    assert reg.PluginInfo.DESCRIPTOR.fields_by_name["supported_versions"].number == 4
