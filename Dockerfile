# syntax=docker/dockerfile:1
# The numanet image: `numanet agent` (DaemonSet), `numanet webhook` (Deployment), the
# CNI shim that the agent's init container installs on the host (numanet-install-cni)
# and the pod-side kit `numanet-app`.
#   docker build -t ghcr.io/numanet/numanet:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A compiler for the sdists without wheels (the ovs bindings' C speedups).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/numanet
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY numa ./numa
COPY vswitch ./vswitch
COPY deviceplugin ./deviceplugin
COPY dra ./dra
COPY cni ./cni
COPY protos ./protos
COPY agent ./agent
COPY webhook ./webhook
COPY app ./app
RUN /opt/numanet/bin/pip install --no-cache-dir . \
 && /opt/numanet/bin/python -c "import agent.cli, webhook, cni.shim, cni.install"
# The CNI plugin in C (numanet-install-cni puts it on the host); static, so it runs on any
# host whatever its libc. cni.install finds it in the venv's libexec/.
RUN mkdir -p /opt/numanet/libexec \
 && gcc -O2 -std=c11 -Wall -Wextra -Werror -static -o /opt/numanet/libexec/numanet-relay cni/relay.c \
 && /opt/numanet/bin/python -c "from cni.install import find_relay; assert find_relay()"

FROM ${PYTHON_IMAGE}
# pyudev loads libudev at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libudev1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/numanet /opt/numanet
COPY deploy/image/install-cni.sh /usr/local/bin/numanet-install-cni
ENV PATH=/opt/numanet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Non-root by default: the webhook runs as this user. The agent's DaemonSet sets
# runAsUser 0 and privileged, because it writes the kubelet's device-plugins directory,
# owns root-only sockets under /run/numanet and hands out /dev/vfio devices.
USER 65532:65532
ENTRYPOINT ["numanet"]
CMD ["--help"]
