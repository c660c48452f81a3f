"""Turns a finished job's weights into the next version of its model, with lineage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from maas.v1.training_service_pb2 import TrainingJob
from runtime.architectures import get_architecture
from runtime.artifacts import ArtifactStore
from runtime.weights import check_weights, sha256_hex
from scheduler.artifact_gc import PendingReferences
from scheduler.queue import JobQueue
from scheduler.registry import ModelRegistry


async def register_result(registry: ModelRegistry, queue: JobQueue, artifacts: ArtifactStore,
                          job: TrainingJob, result: dict[str, Any]) -> ModelVersion:
    """Stores the job's weights and registers them; servable by every worker at once."""
    spec = job.spec
    arch = get_architecture(spec.architecture)
    config = arch.resolve_config(spec.config_json)
    data = await asyncio.to_thread(Path(result["weights_path"]).read_bytes)
    check_weights(arch, config, data)
    digest = await asyncio.to_thread(sha256_hex, data)
    spec_doc = MessageToDict(spec, preserving_proto_field_name=True)
    version = ModelVersion(
        model=spec.model_name, architecture=arch.name,
        config_json=json.dumps(config, sort_keys=True), weights_sha256=digest,
        weights_bytes=len(data), platform="pytorch",
        inputs=[TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in arch.inputs(config)],
        outputs=[TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
                 for t in arch.outputs(config)],
        training_job_id=job.job_id, dataset_sha256=job.dataset_sha256,
        training_spec_json=json.dumps(spec_doc, sort_keys=True),
        metrics={k: float(v) for k, v in result["metrics"].items()})
    # Held from the store to the version: garbage collection spares the weights meanwhile.
    async with PendingReferences(queue.client).held("weights", digest):
        await asyncio.to_thread(artifacts.put_weights, data)
        await queue.ensure_group(spec.model_name)
        return await registry.add_version(version)
