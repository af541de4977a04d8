"""``numanet webhook``: the mutating admission webhook that adds numanet resources to pods.

A pod names its networks in ``k8s.v1.cni.cncf.io/networks``; when a network's
NetworkAttachmentDefinition carries ``k8s.v1.cni.cncf.io/resourceName: <prefix>/<pool>``,
the webhook adds that resource to the pod's first container and mounts the pod's
annotations at ``/etc/podnetinfo`` (see ``mutation``). NADs come from the API server
(in-cluster service account) or, with ``--nad-dir``, from manifest files.
"""

from __future__ import annotations

import argparse
import logging
import signal
import ssl
import sys
import threading
from pathlib import Path
from types import FrameType

import yaml

from deviceplugin import naming

log = logging.getLogger(__name__)

DEFAULT_TLS_DIR = Path("/etc/numanet/webhook-tls")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", type=Path, default=DEFAULT_TLS_DIR / "tls.crt",
                        help="server certificate (PEM), from the mounted TLS secret")
    parser.add_argument("--tls-key", type=Path, default=DEFAULT_TLS_DIR / "tls.key",
                        help="private key of the certificate (PEM)")
    parser.add_argument("--address", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8443, help="listen port (default 8443)")
    parser.add_argument("--nad-dir", type=Path, default=None,
                        help="read NetworkAttachmentDefinitions from YAML/JSON files in this "
                             "directory instead of the API server (tests, offline clusters)")
    parser.add_argument("--config", type=Path, default=None,
                        help="the agent's config file; only resourcePrefix is read from it")
    parser.add_argument("--resource-prefix", default=None,
                        help="resource prefix of numanet resources (default: the config's "
                             f"resourcePrefix, else {naming.DEFAULT_PREFIX})")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def resource_prefix(config: Path | None, override: str | None) -> str:
    """The prefix from ``--resource-prefix``, else the config file, else the default."""
    if override:
        return naming.validate_prefix(override)
    if config is None:
        return naming.DEFAULT_PREFIX
    try:
        data = yaml.safe_load(config.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read config {config}: {exc}") from None
    if data is None:
        return naming.DEFAULT_PREFIX
    if not isinstance(data, dict):
        raise ValueError(f"config {config}: the top level must be a mapping")
    value = data.get("resourcePrefix", naming.DEFAULT_PREFIX)
    try:
        return naming.validate_prefix(value)
    except naming.InvalidName as exc:
        raise ValueError(f"config {config}: resourcePrefix: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from webhook.nads import (
        ApiServerSource,
        DirectorySource,
        NadLookupError,
        NadSource,
    )
    from webhook.server import WebhookServer

    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        prefix = resource_prefix(args.config, args.resource_prefix)
        source: NadSource = (DirectorySource(args.nad_dir) if args.nad_dir
                             else ApiServerSource.in_cluster())
        server = WebhookServer((args.address, args.port), args.tls_cert, args.tls_key,
                               source, prefix)
    except (ValueError, NadLookupError, OSError, ssl.SSLError) as exc:
        print(f"numanet webhook: {exc}", file=sys.stderr)
        return 2
    stopping = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("stopping signal=%s", signal.Signals(signum).name)
            threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info("webhook listening address=%s port=%d prefix=%s nad_source=%s",
             args.address, server.port, prefix,
             f"dir:{args.nad_dir}" if args.nad_dir else "api-server")
    server.serve_forever()
    return 0
