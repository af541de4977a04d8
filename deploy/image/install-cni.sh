#!/bin/sh
# numanet-install-cni: the agent's init container. Installs the CNI plugin on the host as
# $HOST_ROOT/opt/cni/bin/numanet: the image's compiled relay (cni/relay.c, a static
# binary, so it runs on any host) when the image has it, else a stdlib-only Python
# launcher whose #! line names the HOST's python3 (Multus executes it on the host,
# outside this image). Beside it, .numanet/ holds the Python shim and its bytecode
# (compiled here; a host python of another version compiles the source itself, and
# caches its own bytecode there), the fallback.
#
# Environment: HOST_ROOT (default /host) where the host's /usr, /opt/cni/bin and
# /etc/cni/net.d are mounted; NUMANET_HOST_PYTHON to force the interpreter path (as the
# host sees it); NUMANET_PYTHON, the interpreter that runs the installer (default python3);
# NUMANET_CNI_RELAY: "none" installs the Python launcher even when the relay is there.
set -eu

HOST_ROOT=${HOST_ROOT:-/host}
CNI_BIN_DIR="$HOST_ROOT/opt/cni/bin"
CNI_CONF_DIR="$HOST_ROOT/etc/cni/net.d"
PYTHON=${NUMANET_PYTHON:-python3}

host_python=${NUMANET_HOST_PYTHON:-}
if [ -z "$host_python" ]; then
    # Debian/Ubuntu/Fedora/SUSE ship /usr/bin/python3; RHEL 8 keeps platform-python.
    for candidate in /usr/bin/python3 /usr/local/bin/python3 /usr/libexec/platform-python; do
        if [ -e "$HOST_ROOT$candidate" ] || [ -L "$HOST_ROOT$candidate" ]; then
            host_python=$candidate
            break
        fi
    done
fi
relay=$("$PYTHON" -c 'from cni.install import find_relay; print(find_relay() or "")')
if [ -z "$host_python" ] && [ -n "$relay" ]; then
    # The relay needs no interpreter; the launcher's #! line is only written without it.
    host_python=/usr/bin/python3
elif [ -z "$host_python" ]; then
    echo "numanet-install-cni: the host has no python3 (looked for /usr/bin/python3," \
         "/usr/local/bin/python3, /usr/libexec/platform-python under $HOST_ROOT):" \
         "the numanet CNI shim runs on the host and needs python3 >= 3.9 (standard" \
         "library only); install it on the node or set NUMANET_HOST_PYTHON" >&2
    exit 1
fi

if [ ! -d "$CNI_BIN_DIR" ]; then
    echo "numanet-install-cni: $CNI_BIN_DIR is not mounted (hostPath /opt/cni/bin)" >&2
    exit 1
fi

"$PYTHON" -m cni.install "$CNI_BIN_DIR/numanet" --python "$host_python" >/dev/null
if [ -n "$relay" ]; then
    echo "numanet-install-cni: installed $CNI_BIN_DIR/numanet (compiled relay; Python shim" \
         "in $CNI_BIN_DIR/.numanet for $host_python)"
else
    echo "numanet-install-cni: installed $CNI_BIN_DIR/numanet (python: $host_python)"
fi

# numanet is called by Multus for each NetworkAttachmentDefinition; say so when it is missing.
if ! grep -qs '"multus' "$CNI_CONF_DIR"/*.conf "$CNI_CONF_DIR"/*.conflist 2>/dev/null; then
    echo "numanet-install-cni: warning: no Multus configuration in /etc/cni/net.d;" \
         "numanet networks are attached by Multus: install Multus on this node" >&2
fi
