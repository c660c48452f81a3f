"""The servers' own contracts, generated from internal/protos/maas/queue/v1 (package
maas.queue.v1): what travels through Redis and the worker <-> sandbox runner protocol.
Never imported by the SDK (`maas`); lint-imports checks it."""
