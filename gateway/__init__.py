"""The gRPC front door: auth, validation, v2 and maas.v1 servicers, reply dispatch."""
