#!/bin/sh
# Build numanet-app as one file: a zipapp of the app/ package (stdlib only) that any
# python3 >= 3.9 runs, for app images that do not install numanet:
#   deploy/tools/build-app-pyz.sh [OUT]    (default build/numanet-app.pyz; `make app-pyz`)
#   COPY it to /usr/local/bin/numanet-app and run `numanet-app dpdk-args`.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/build/numanet-app.pyz}
python=${PYTHON:-python3}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/app/schemas" "$(dirname "$out")"
cp "$repo"/app/*.py "$stage/app/"
cp "$repo"/app/schemas/*.json "$stage/app/schemas/"
# Not zipapp's --main: its __main__ drops main()'s return value, the exit status.
cp "$repo/app/__main__.py" "$stage/__main__.py"
"$python" -m zipapp "$stage" --python "/usr/bin/env python3" --compress --output "$out"
chmod 0755 "$out"
echo "$out"
