"""Pulls work from the queue and runs torch: model cache, batching executor, heartbeats."""
