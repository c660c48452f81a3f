"""The model cache's memory: weights memory-mapped into the module (no host copy), a version
larger than the whole budget refused before it loads (MODEL_TOO_LARGE), corrupt files caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from maas.errors import ModelTooLarge
from maas.v1.model_service_pb2 import ModelVersion
from runtime.architectures import get_architecture
from runtime.artifacts import ArtifactStore
from worker.cache import ModelCache


def register(store: ArtifactStore, dtype: torch.dtype = torch.float32) -> ModelVersion:
    arch = get_architecture("mlp")
    config = arch.resolve_config(None)
    torch.manual_seed(0)
    state = {k: v.to(dtype) for k, v in arch.build(config).state_dict().items()}
    digest, _ = store.put_weights(save(state))
    return ModelVersion(model="m", version="1", architecture="mlp",
                        config_json=json.dumps(config), weights_sha256=digest)


def mapped_from(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process mapped from the file."""
    spans = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = line.split()[0].split("-")
            spans.append((int(start, 16), int(end, 16)))
    return spans


def test_weights_are_memory_mapped_into_the_module(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = register(store)
    loaded = ModelCache(store, torch.device("cpu")).load(version)
    spans = mapped_from(store.weights_path(version.weights_sha256))
    params = list(loaded.module.parameters())
    assert spans and all(any(a <= p.data_ptr() < b for a, b in spans) for p in params)


def test_weights_of_another_dtype_are_copied_and_cast(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    loaded = ModelCache(store, torch.device("cpu")).load(register(store, torch.float64))
    assert {p.dtype for p in loaded.module.parameters()} == {torch.float32}


def test_a_version_larger_than_the_budget_is_refused_before_loading(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = register(store)  # weights_bytes unset: the file's size decides
    size = store.weights_path(version.weights_sha256).stat().st_size
    cache = ModelCache(store, torch.device("cpu"), budget_bytes=size - 1)
    with pytest.raises(ModelTooLarge) as refused:
        cache.load(version)
    assert refused.value.reason == "MODEL_TOO_LARGE"
    assert "MAAS_WORKER_MODEL_MEMORY_MB" in refused.value.message
    assert cache.loads == 0 and cache.loaded_names() == []
    assert ModelCache(store, torch.device("cpu"), budget_bytes=2 * size).load(version)


def test_a_corrupt_weights_file_fails_the_load(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    version = register(store)
    path = store.weights_path(version.weights_sha256)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        ModelCache(store, torch.device("cpu")).load(version)
