"""The data plane: what the servicers call, transport-free (no gRPC in or below it)."""
