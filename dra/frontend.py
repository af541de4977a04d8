"""The DRA front end as one piece for the agent: ResourceSlices kept published, the
kubelet plugin served, claims prepared through the agent's own allocator."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deviceplugin.allocate import Allocator
from deviceplugin.manager import ResourceManager
from dra.checkpoint import ClaimCheckpoint
from dra.kube import KubeResources, ResourceApi, api_client
from dra.plugin import DraPlugin
from dra.prepare import Preparer
from dra.publisher import SlicePublisher, SliceSync

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraSettings:
    node: str
    kubelet_dir: Path
    run_dir: Path
    cdi_dir: Path
    kubeconfig: Path | None = None  # None: the pod's service account


class DraFrontend:
    def __init__(self, settings: DraSettings, manager: ResourceManager, allocator: Allocator,
                 api: ResourceApi | None = None,
                 on_registered: Callable[[], None] | None = None) -> None:
        config = manager.config
        self.driver = config.resource_prefix if config is not None else "numanet.io"
        self.settings = settings
        self._owned_api = api is None
        self.api: Any = api if api is not None else KubeResources(api_client(settings.kubeconfig))
        self.checkpoint = ClaimCheckpoint(settings.run_dir)
        self.preparer = Preparer(allocator, self.api, settings.node, self.driver,
                                 settings.cdi_dir, self.checkpoint)
        self.plugin = DraPlugin(self.preparer, allocator, settings.kubelet_dir, self.driver,
                                on_registered=on_registered)
        self.slices = SliceSync(SlicePublisher(self.api, settings.node, self.driver), manager)

    def start(self) -> None:
        claims = self.checkpoint.load()
        self.slices.start()
        self.plugin.start()
        log.info("DRA front end started driver=%s node=%s prepared_claims=%d", self.driver,
                 self.settings.node, len(claims))

    def stop(self) -> None:
        """Deregister (the registration socket goes), stop serving, delete the slices.
        Prepared claims stay prepared: their files and checkpoint are on disk."""
        self.plugin.stop()
        self.slices.stop(delete=True)
        if self._owned_api:
            self.api.close()

    def status(self) -> dict[str, Any]:
        state = self.plugin.state()
        return {"driver": self.driver, "node": self.settings.node,
                "registered": self.plugin.registered,
                "registrationError": state.error if state else "",
                "slicesInSync": self.slices.in_sync.is_set(),
                "slicesError": self.slices.last_error,
                "preparedClaims": len(self.checkpoint.all())}
