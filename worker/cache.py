"""ModelCache: each model version loaded once per worker, placed on the device, warmed up."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import torch
from safetensors.torch import load as load_safetensors

from maas.architectures import get_architecture
from maas.artifacts import ArtifactStore
from maas.v1.model_service_pb2 import ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    module: torch.nn.Module
    device: torch.device


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class ModelCache:
    """Thread-safe: loads happen in the torch thread, lookups on the event loop."""

    def __init__(self, store: ArtifactStore, device: torch.device) -> None:
        self._store = store
        self.device = device
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._lock = threading.Lock()

    def cached(self, model: str, version: str) -> LoadedModel | None:
        return self._models.get((model, version))

    def loaded_names(self) -> list[str]:
        return [f"{m}:{v}" for m, v in self._models]

    def load(self, version: ModelVersion) -> LoadedModel:
        """Loads (or returns) a version: safetensors only, sha256 checked, warm-up forward."""
        key = (version.model, version.version)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None:
                return hit
            arch = get_architecture(version.architecture)
            config = arch.resolve_config(json.loads(version.config_json or "{}"))
            module = arch.build(config)
            state = load_safetensors(self._store.read_weights(version.weights_sha256))
            module.load_state_dict(state, strict=True)
            module.to(self.device).eval()
            with torch.inference_mode():
                for spec in [arch.inputs(config)]:
                    module(*(torch.zeros([1 if d == -1 else d for d in s.shape],
                                         device=self.device) for s in spec))
            loaded = LoadedModel(version, module, self.device)
            self._models[key] = loaded
            log.info("loaded %s:%s (%s) on %s", version.model, version.version,
                     version.architecture, self.device)
            return loaded
