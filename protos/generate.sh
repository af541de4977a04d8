#!/bin/sh
# Regenerates the Python modules from the kubelet .proto files (make protos).
# Run from anywhere; uses the python given in $PYTHON (default: the venv's).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$top/.venv/bin/python}
out=${1:-$top}
cd "$top"
for proto in protos/deviceplugin/v1beta1/api.proto protos/podresources/v1/api.proto \
    protos/dra/v1/api.proto protos/dra/v1beta1/api.proto protos/pluginregistration/v1/api.proto; do
  "$py" -m grpc_tools.protoc -I. --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" "$proto"
done
