"""ModelCache: each model version loaded once per worker, placed on the device, warmed up,
and evicted least-recently-used when the cache would exceed its memory budget.

Loaders: safetensors weights into a maas architecture, memory-mapped (safetensors' load_file)
and assigned to the module's parameters where their dtypes and shapes match, so that no second
copy of the weights is made on the host; TorchScript archives with
torch.jit.load; torch.export archives with torch.export.load, after the archive's layout is
checked again (runtime/archives.py: no pickled tensors or objects) and with torch.load forced to
weights_only (TORCH_FORCE_WEIGHTS_ONLY_LOAD), so nothing goes through Python's pickle.

A version whose artifact (file size) is larger than the whole budget is never loaded: its jobs
fail MODEL_TOO_LARGE (FAILED_PRECONDITION) rather than take the worker out of memory.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors_file
from torch.export.passes import move_to_device_pass

from maas.errors import ModelTooLarge
from maas.tensors import NUMPY_DTYPES
from maas.v1.model_service_pb2 import ModelVersion
from runtime.architectures import get_architecture
from runtime.archives import TORCH_EXPORT, TORCHSCRIPT, archive_format
from runtime.artifacts import ArtifactStore
from runtime.weights import file_sha256

log = logging.getLogger(__name__)
MIB = 1024 * 1024
Shape = tuple[int, ...]


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    module: torch.nn.Module
    device: torch.device
    size_bytes: int
    load_s: float


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers (what a loaded model costs)."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache:
    """Thread-safe LRU: loads happen in the torch thread, lookups on the event loop.

    budget_bytes = 0 means unlimited. A version larger than the whole budget is refused
    (MODEL_TOO_LARGE): before loading, by its artifact's size; after, by what it holds.
    """

    def __init__(self, store: ArtifactStore, device: torch.device, budget_bytes: int = 0) -> None:
        self._store = store
        self.device = device
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0
        self.loads = 0

    def cached(self, model: str, version: str) -> LoadedModel | None:
        key = (model, version)
        with self._lock:
            hit = self._models.get(key)
            if hit is not None:
                self._models.move_to_end(key)
            return hit

    def loaded_names(self) -> list[str]:
        with self._lock:
            return [f"{m}:{v}" for m, v in self._models]

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(m.size_bytes for m in self._models.values())

    def load(self, version: ModelVersion) -> LoadedModel:
        """Loads (or returns) a version: safetensors only, sha256 checked, warm-up forward."""
        key = (version.model, version.version)
        hit = self.cached(*key)
        if hit is not None:
            return hit
        self._check_fits(version, self._artifact_bytes(version))
        started = time.perf_counter()
        module, inputs = self._module(version)
        with torch.inference_mode():
            # Ones, not zeros: a valid token id and a valid sequence length (1) alike.
            module(*(torch.from_numpy(np.ones([1 if d == -1 else d for d in shape],
                                              NUMPY_DTYPES[datatype])).to(self.device)
                     for datatype, shape in inputs))
        loaded = LoadedModel(version, module, self.device, module_bytes(module),
                             time.perf_counter() - started)
        self._check_fits(version, loaded.size_bytes)
        with self._lock:
            self._make_room(loaded.size_bytes)
            self._models[key] = loaded
            self.loads += 1
        log.info("loaded %s:%s (%s, %.1f MiB) on %s in %.0f ms", version.model, version.version,
                 version.architecture or version.platform, loaded.size_bytes / MIB, self.device,
                 loaded.load_s * 1e3)
        return loaded

    def _module(self, version: ModelVersion) -> tuple[torch.nn.Module, list[tuple[str, Shape]]]:
        """The version's module on the device (eval mode where that applies) and its inputs'
        (datatype, shape), for the warm-up."""
        if version.format in (TORCHSCRIPT, TORCH_EXPORT):
            module = load_archive(self._store.read_archive(version.archive_sha256),
                                  version.format, self.device)
            return module, [(s.datatype, tuple(s.shape)) for s in version.inputs]
        arch = get_architecture(version.architecture)
        config = arch.resolve_config(json.loads(version.config_json or "{}"))
        module = arch.build(config)
        self._load_weights(module, version.weights_sha256)
        return module.to(self.device).eval(), [(s.datatype, s.shape) for s in arch.inputs(config)]

    def _load_weights(self, module: torch.nn.Module, sha256: str) -> None:
        """The weights file, checked against its sha256 (streamed), memory-mapped into the
        module: assigned (no copy) where every tensor's dtype and shape match the module's,
        else copied (and cast) into its parameters."""
        path = self._store.weights_path(sha256)
        if file_sha256(path) != sha256:
            raise ValueError(f"weights file {sha256} is corrupt (sha256 mismatch)")
        state = load_safetensors_file(path)  # mmapped: pages are read as tensors are used
        current = module.state_dict()
        is_same = all(k in current and current[k].dtype == t.dtype
                      and current[k].shape == t.shape for k, t in state.items())
        module.load_state_dict(state, strict=True, assign=is_same)

    def _artifact_bytes(self, version: ModelVersion) -> int:
        """The size of the version's weights or archive: as registered, else the file's."""
        if version.format in (TORCHSCRIPT, TORCH_EXPORT):
            return version.archive_bytes or self._store.archive_path(
                version.archive_sha256).stat().st_size
        return version.weights_bytes or self._store.weights_path(
            version.weights_sha256).stat().st_size

    def _check_fits(self, version: ModelVersion, size_bytes: int) -> None:
        """FAILED_PRECONDITION (MODEL_TOO_LARGE) when the version alone exceeds the budget."""
        if self.budget_bytes and size_bytes > self.budget_bytes:
            raise ModelTooLarge(
                f"model {version.model}:{version.version} needs {size_bytes / MIB:.1f} MiB, more "
                f"than this worker's whole model memory (MAAS_WORKER_MODEL_MEMORY_MB="
                f"{self.budget_bytes // MIB}): it is not loaded; raise the setting on a worker "
                "that serves the model (MAAS_WORKER_MODELS)")

    def _make_room(self, needed: int) -> None:
        """Evicts least-recently-used models until `needed` more bytes fit (lock held)."""
        if not self.budget_bytes:
            return
        used = sum(m.size_bytes for m in self._models.values())
        while self._models and used + needed > self.budget_bytes:
            (name, version), evicted = self._models.popitem(last=False)
            used -= evicted.size_bytes
            self.evictions += 1
            log.info("evicted %s:%s (%.1f MiB) to stay under the %.0f MiB budget", name,
                     version, evicted.size_bytes / MIB, self.budget_bytes / MIB)


def load_archive(data: bytes, fmt: int, device: torch.device) -> torch.nn.Module:
    """A TorchScript or torch.export archive as a module on `device`. Whatever torch raises
    on a bad archive fails the jobs of the version (the worker's per-job boundary)."""
    found = archive_format(data)  # the layout again: the store is shared, trust nothing
    if found != fmt:
        raise ValueError(f"the stored archive is not of its registered format ({found}, "
                         f"registered {fmt})")
    if fmt == TORCHSCRIPT:
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of export
            warnings.simplefilter("ignore", DeprecationWarning)
            module = cast("torch.nn.Module", torch.jit.load(  # type: ignore[no-untyped-call]
                io.BytesIO(data), map_location=device))
        return module.eval()
    # torch.export.load reads sample inputs with torch.load, falling back to full unpickling
    # when weights_only fails: this forbids the fallback, process-wide.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    program = torch.export.load(io.BytesIO(data))
    if device.type != "cpu":
        program = move_to_device_pass(program, device)
    return program.module()  # an exported module runs as exported (it has no eval())
