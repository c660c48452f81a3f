"""The worker's model cache: LRU eviction under a memory budget, reload on demand."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from maas.v1.model_service_pb2 import ModelVersion
from runtime.architectures import get_architecture
from runtime.artifacts import ArtifactStore
from worker.cache import ModelCache, module_bytes


def register(store: ArtifactStore, name: str, seed: int) -> ModelVersion:
    arch = get_architecture("mlp")
    config = arch.resolve_config(None)
    torch.manual_seed(seed)
    digest, _ = store.put_weights(save(arch.build(config).state_dict()))
    return ModelVersion(model=name, version="1", architecture="mlp",
                        config_json=json.dumps(config), weights_sha256=digest)


def test_lru_eviction_under_budget_and_reload(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    versions = [register(store, f"m{i}", i) for i in range(3)]
    one = module_bytes(get_architecture("mlp").build(get_architecture("mlp").resolve_config(None)))
    cache = ModelCache(store, torch.device("cpu"), budget_bytes=int(2.5 * one))
    cache.load(versions[0])
    cache.load(versions[1])
    assert cache.cached("m0", "1") is not None  # m0 is now the most recently used
    cache.load(versions[2])  # evicts m1, the least recently used
    assert sorted(cache.loaded_names()) == ["m0:1", "m2:1"]
    assert cache.evictions == 1 and cache.size_bytes <= cache.budget_bytes
    reloaded = cache.load(versions[1])  # on demand, evicting m0
    assert cache.cached("m0", "1") is None and reloaded.load_s > 0
    x = torch.rand(2, 64)
    with torch.inference_mode():
        again = cache.load(versions[1]).module(x)
        fresh = ModelCache(store, torch.device("cpu")).load(versions[1]).module(x)
    assert torch.equal(again, fresh)


def test_no_budget_keeps_everything(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    cache = ModelCache(store, torch.device("cpu"))
    for i in range(4):
        cache.load(register(store, f"m{i}", i))
    assert len(cache.loaded_names()) == 4 and cache.evictions == 0
