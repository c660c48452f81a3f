"""runtime: what the maas servers (gateway, scheduler, worker) share and the SDK does not need.

Settings, logs, metrics, traces and health; the artifact store and its node cache; model
archives, weights and the built-in architectures with their torch modules; data sets and
training specs; how a service process starts. It imports `maas` (errors, tensors, protos),
never `gateway`, `scheduler` or `worker`; `maas` never imports it (lint-imports checks both).
"""
