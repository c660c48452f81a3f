"""Training datasets: named arrays `features` (float32) and `labels` (int64 class ids), and
for sequences an optional `lengths` (int64): features [N, T] then hold token ids, row i's
first lengths[i] of them real, the rest padding (without `lengths` every token is real).

Uploaded datasets arrive as .npz (loaded with allow_pickle=False) or safetensors bytes and
are validated here; every problem is an INVALID_ARGUMENT naming the field. Built in:
`digits` (ships with scikit-learn), the generated sequence tasks `parity` and
`majority`, and `addition` for the generative `gpt` (runtime/sequence_data.py). For a
generative architecture a sample's label is its prompt length: the tokens after it are the
targets of next-token prediction. numpy only: no torch, so the gateway can validate too.
Files are read in runtime/dataset_files.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from runtime.architectures import MAX_WIDTH
from runtime.dataset_files import ARRAYS as ARRAYS  # re-exported for callers
from runtime.dataset_files import invalid_dataset, npz_arrays, safetensors_arrays

MAX_DATASET_BYTES = 512 * 1024 * 1024
# Class ids: an architecture has at most MAX_WIDTH classes (its num_classes is a width).
MAX_CLASSES = MAX_WIDTH
BUILTIN_DATASETS = ("digits", "parity", "majority", "addition")

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Dataset:
    """features[i] is one sample (any shape), labels[i] its class id; lengths[i] (when
    given) how many of a sequence's tokens features[i] are real."""

    name: str
    features: FloatArray
    labels: IntArray
    lengths: IntArray | None = None

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.features.shape[1:])


def from_arrays(name: str, arrays: Mapping[str, np.ndarray]) -> Dataset:
    """A validated Dataset from raw arrays; INVALID_ARGUMENT naming the first bad field."""
    for key in ("features", "labels"):
        if key not in arrays:
            raise invalid_dataset(key, f"missing; the dataset has arrays {sorted(arrays)}")
    features, labels = arrays["features"], arrays["labels"]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise invalid_dataset("labels", f"must be a 1-D integer array, got {labels.dtype} "
                                        f"of shape {list(labels.shape)}")
    if features.ndim < 2 or not np.issubdtype(features.dtype, np.floating):
        raise invalid_dataset("features", f"must be a float array of shape [N, ...], got "
                                          f"{features.dtype} of shape {list(features.shape)}")
    if features.shape[0] != labels.shape[0]:
        raise invalid_dataset("labels", f"{labels.shape[0]} labels for {features.shape[0]} samples")
    if labels.shape[0] < 2:
        raise invalid_dataset("features", "a dataset needs at least 2 samples")
    if features.size == 0:
        raise invalid_dataset("features", "samples are empty")
    if labels.min() < 0 or labels.max() >= MAX_CLASSES:
        raise invalid_dataset("labels", f"class ids must be in 0..{MAX_CLASSES - 1} (a model "
                                        f"has at most {MAX_CLASSES} classes); got "
                                        f"{labels.min()}..{labels.max()}")
    features32 = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features32).all():
        raise invalid_dataset("features", "contains NaN or Inf (or values beyond float32)")
    lengths = _checked_lengths(arrays.get("lengths"), features.shape)
    return Dataset(name, features32, np.ascontiguousarray(labels, dtype=np.int64), lengths)


def _checked_lengths(lengths: np.ndarray | None, shape: tuple[int, ...]) -> IntArray | None:
    """Optional per-sample sequence lengths: 1-D integers, one per sample, in 1..T."""
    if lengths is None:
        return None
    if len(shape) != 2:
        raise invalid_dataset("lengths", f"only sequences (features [N, T]) have lengths; features "
                                         f"are {list(shape)}")
    if lengths.shape != shape[:1] or not np.issubdtype(lengths.dtype, np.integer):
        raise invalid_dataset("lengths", f"must be {shape[0]} integers (one per sample), got "
                                         f"{lengths.dtype} of shape {list(lengths.shape)}")
    if lengths.min() < 1 or lengths.max() > shape[1]:
        raise invalid_dataset("lengths", f"must be in 1..{shape[1]} (the features' sequence dim)")
    return np.ascontiguousarray(lengths, dtype=np.int64)


def load_npz_bytes(data: bytes, name: str = "uploaded",
                   max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """A dataset from .npz bytes with arrays `features` and `labels` (never unpickles).

    max_bytes bounds both the archive and its arrays uncompressed (no zip bombs).
    """
    return from_arrays(name, npz_arrays(data, max_bytes))


def load_safetensors_bytes(data: bytes, name: str = "uploaded",
                           max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """A dataset from safetensors bytes with tensors `features` and `labels`."""
    return from_arrays(name, safetensors_arrays(data, max_bytes))


def builtin_dataset(name: str) -> Dataset:
    """A dataset that ships with maas; `digits`: 1,797 8x8 images in [0, 1], 10 classes;
    `parity`, `majority`, `addition`: generated token sequences (runtime/sequence_data.py)."""
    if name not in BUILTIN_DATASETS:
        raise invalid_dataset("dataset", f"unknown built-in dataset {name!r}; known: "
                                         f"{list(BUILTIN_DATASETS)}")
    if name != "digits":
        from runtime import sequence_data

        tokens, lengths, labels = sequence_data.GENERATORS[name]()
        return Dataset(name, tokens.astype(np.float32), labels, lengths)
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = (np.asarray(digits.images, dtype=np.float64) / 16.0).astype(np.float32)
    return Dataset("digits", features, np.asarray(digits.target, dtype=np.int64))


def check_labels(dataset: Dataset, num_classes: int) -> None:
    """INVALID_ARGUMENT on `labels` when a class id is outside 0..num_classes-1."""
    top = int(dataset.labels.max())
    if top >= num_classes:
        raise invalid_dataset("labels", f"class id {top} is out of range for {num_classes} classes")


def check_prompts(dataset: Dataset) -> None:
    """INVALID_ARGUMENT on `labels` unless each is a prompt length with a token after it:
    1 <= labels[i] < lengths[i] (every token is real without lengths). For `gpt`."""
    steps = dataset.features.shape[1] if dataset.features.ndim == 2 else 0
    lengths = dataset.lengths if dataset.lengths is not None else np.full_like(dataset.labels,
                                                                               steps)
    bad = np.flatnonzero((dataset.labels < 1) | (dataset.labels >= lengths))
    if len(bad):
        raise invalid_dataset("labels", f"a generative model's labels are prompt lengths, each "
                              f"1..length-1 (at least one token to predict); sample {bad[0]} has "
                              f"{dataset.labels[bad[0]]} for length {lengths[bad[0]]}")


def present(dataset: Dataset, input_shape: Sequence[int]) -> Dataset:
    """The dataset with samples shaped as an architecture's input ([-1, ...] TensorSpec).

    Same element count → reshape (8x8 → 64); a 2-D image (optionally [1, H, W]) and an
    image input [C, H, W] with C = 1 → bilinear resize (8x8 → 1x28x28). A -1 in the input
    (a sequence dim) takes any size: such samples are taken as they are.
    """
    target = tuple(int(d) for d in input_shape[1:])
    source = dataset.sample_shape
    if len(source) == len(target) and all(t in (-1, s) for s, t in zip(source, target,
                                                                          strict=True)):
        return dataset
    if -1 in target:
        raise invalid_dataset("dataset", f"features of shape {list(source)} do not fit "
                                         f"architecture input {[-1, *target]} (-1 = any size)")
    if int(np.prod(source)) == int(np.prod(target)):
        features = dataset.features.reshape((-1, *target))
    elif _is_image(source) and _is_image(target) and (len(target) == 2 or target[0] == 1):
        images = dataset.features.reshape((-1, *source[-2:]))
        features = resize_bilinear(images, target[-2], target[-1]).reshape((-1, *target))
    else:
        raise invalid_dataset("dataset", f"features of shape {list(source)} do not fit "
                                         f"architecture input {[-1, *target]}")
    return Dataset(dataset.name, np.ascontiguousarray(features), dataset.labels,
                   dataset.lengths)


def _is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)


def _interpolation_matrix(n_out: int, n_in: int) -> npt.NDArray[np.float64]:
    """Rows of weights mapping n_in samples to n_out (half-pixel centres, edge clamped)."""
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0.0, n_in - 1)
    low = np.floor(centres).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    matrix = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def resize_bilinear(images: np.ndarray, height: int, width: int) -> FloatArray:
    """[N, H, W] → [N, height, width], bilinear like torch's align_corners=False; float32."""
    rows = _interpolation_matrix(height, images.shape[1])
    cols = _interpolation_matrix(width, images.shape[2])
    out = np.einsum("ih,nhw,jw->nij", rows, images.astype(np.float64), cols)
    return np.ascontiguousarray(out, dtype=np.float32)


def split(n: int, validation_fraction: float, seed: int) -> tuple[IntArray, IntArray]:
    """(train, validation) sample indices, fixed by seed; each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(n * validation_fraction)
    if validation_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    val, train = order[:n_val], order[n_val:]
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def dataset_sha256(dataset: Dataset) -> str:
    """sha256 of a canonical form: a JSON header of dtypes/shapes, then little-endian bytes."""
    digest = hashlib.sha256()
    header = {
        "features": {"dtype": "<f4", "shape": list(dataset.features.shape)},
        "labels": {"dtype": "<i8", "shape": list(dataset.labels.shape)},
    }
    digest.update(json.dumps(header, sort_keys=True).encode() + b"\n")
    digest.update(np.ascontiguousarray(dataset.features, dtype="<f4").tobytes())
    digest.update(np.ascontiguousarray(dataset.labels, dtype="<i8").tobytes())
    if dataset.lengths is not None:  # absent: the digest of a dataset without lengths
        digest.update(b"lengths\n")
        digest.update(np.ascontiguousarray(dataset.lengths, dtype="<i8").tobytes())
    return digest.hexdigest()
