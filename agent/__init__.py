"""The node agent: the composition root of numanet (the `numanet` CLI, config, wiring)."""
