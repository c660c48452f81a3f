"""Datasets: loading and validating uploads, the built-in digits, presentation and splits."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from maas.errors import InvalidArgument
from runtime.datasets import (
    MAX_CLASSES,
    Dataset,
    builtin_dataset,
    check_labels,
    dataset_sha256,
    load_npz_bytes,
    load_safetensors_bytes,
    present,
    resize_bilinear,
    split,
)
from tests.hostile_files import HOSTILE_DATASETS, npy_bytes, npz_bytes, npz_with_labels


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _good_arrays(n: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"features": rng.random((n, 4), dtype=np.float32),
            "labels": np.arange(n, dtype=np.int64) % 3}


def _field_of(exc: pytest.ExceptionInfo[InvalidArgument]) -> str:
    assert len(exc.value.violations) == 1
    return exc.value.violations[0].field


def test_npz_round_trip_converts_dtypes() -> None:
    arrays = _good_arrays()
    data = _npz(features=arrays["features"].astype(np.float64),
                labels=arrays["labels"].astype(np.int32))
    dataset = load_npz_bytes(data, name="mine")
    assert dataset.name == "mine"
    assert dataset.features.dtype == np.float32 and dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.features, arrays["features"])
    np.testing.assert_array_equal(dataset.labels, arrays["labels"])


def test_safetensors_round_trip() -> None:
    arrays = _good_arrays()
    dataset = load_safetensors_bytes(safetensors.numpy.save(arrays))
    np.testing.assert_array_equal(dataset.labels, arrays["labels"])
    assert dataset.sample_shape == (4,)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"labels": None}, "labels"),
        ({"features": None}, "features"),
        ({"labels": np.zeros(6, dtype=np.float32)}, "labels"),
        ({"labels": np.zeros((6, 1), dtype=np.int64)}, "labels"),
        ({"labels": -np.ones(6, dtype=np.int64)}, "labels"),
        ({"features": np.zeros((6, 4), dtype=np.int32)}, "features"),
        ({"features": np.zeros(6, dtype=np.float32)}, "features"),
        ({"features": np.zeros((5, 4), dtype=np.float32)}, "labels"),
        ({"features": np.array([[np.nan, 0, 0, 0]] * 6, dtype=np.float32)}, "features"),
        ({"features": np.array([[np.inf, 0, 0, 0]] * 6, dtype=np.float32)}, "features"),
        ({"features": np.zeros((1, 4), np.float32), "labels": np.zeros(1, np.int64)},
         "features"),
    ],
)
def test_bad_arrays_name_the_field(change: dict[str, Any], field: str) -> None:
    arrays = {**_good_arrays(), **change}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    with pytest.raises(InvalidArgument) as npz_exc:
        load_npz_bytes(_npz(**arrays))
    assert _field_of(npz_exc) == field
    with pytest.raises(InvalidArgument) as st_exc:
        load_safetensors_bytes(safetensors.numpy.save(arrays))
    assert _field_of(st_exc) == field


def test_npz_never_unpickles_object_arrays() -> None:
    labels = np.array([0, 1, {"x": 1}, 0, 1, 0], dtype=object)
    data = _npz(features=_good_arrays()["features"], labels=labels)
    with pytest.raises(InvalidArgument) as exc:
        load_npz_bytes(data)
    assert _field_of(exc) == "labels"


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04broken", b"\x93NUMPY"])
def test_unreadable_bytes_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidArgument) as exc:
        load_npz_bytes(data)
    assert _field_of(exc) == "dataset"
    with pytest.raises(InvalidArgument) as exc:
        load_safetensors_bytes(data)
    assert _field_of(exc) == "dataset"


def test_size_limit_counts_uncompressed_arrays() -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, features=np.zeros((1000, 100), np.float32),
                        labels=np.zeros(1000, np.int64))
    data = buffer.getvalue()
    assert len(data) < 10_000  # zeros compress well; the arrays are 408 kB
    with pytest.raises(InvalidArgument) as exc:
        load_npz_bytes(data, max_bytes=100_000)
    assert _field_of(exc) == "dataset"
    assert load_npz_bytes(data, max_bytes=1_000_000).num_samples == 1000


def test_digits_builtin() -> None:
    digits = builtin_dataset("digits")
    assert digits.features.shape == (1797, 8, 8)
    assert digits.features.dtype == np.float32
    assert digits.features.min() == 0.0 and digits.features.max() == 1.0
    assert sorted(set(digits.labels.tolist())) == list(range(10))


def test_unknown_builtin_names_dataset() -> None:
    with pytest.raises(InvalidArgument) as exc:
        builtin_dataset("imagenet")
    assert _field_of(exc) == "dataset"


def test_present_for_mlp_and_cnn() -> None:
    digits = builtin_dataset("digits")
    flat = present(digits, (-1, 64))
    assert flat.features.shape == (1797, 64)
    np.testing.assert_array_equal(flat.features[5], digits.features[5].reshape(64))
    images = present(digits, (-1, 1, 28, 28))
    assert images.features.shape == (1797, 1, 28, 28) and images.features.dtype == np.float32
    assert present(images, (-1, 1, 28, 28)) is images


def test_resize_matches_torch_bilinear() -> None:
    import torch

    images = builtin_dataset("digits").features[:50]
    ours = resize_bilinear(images, 28, 28)
    theirs = torch.nn.functional.interpolate(torch.from_numpy(images[:, None]), size=(28, 28),
                                             mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-6)


@pytest.mark.parametrize(("shape", "input_shape"), [((3, 8, 8), (-1, 1, 28, 28)),
                                                     ((10,), (-1, 64)),
                                                     ((2, 4, 4), (-1, 1, 28, 28))])
def test_present_rejects_shapes_that_do_not_fit(shape: tuple[int, ...],
                                                input_shape: tuple[int, ...]) -> None:
    dataset = Dataset("x", np.zeros((4, *shape), np.float32), np.zeros(4, np.int64))
    with pytest.raises(InvalidArgument) as exc:
        present(dataset, input_shape)
    assert _field_of(exc) == "dataset"
    assert "do not fit architecture input" in exc.value.message


def test_check_labels() -> None:
    digits = builtin_dataset("digits")
    check_labels(digits, 10)
    with pytest.raises(InvalidArgument) as exc:
        check_labels(digits, 5)
    assert _field_of(exc) == "labels"


def test_split_is_fixed_by_seed() -> None:
    train, val = split(1797, 0.2, seed=7)
    assert len(train) == 1438 and len(val) == 359
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(1797))
    again_train, again_val = split(1797, 0.2, seed=7)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(val, split(1797, 0.2, seed=8)[1])
    assert len(split(10, 0.0, seed=0)[1]) == 0
    assert len(split(2, 0.2, seed=0)[1]) == 1  # a small set still gets one validation sample


def test_sha256_covers_content_not_name() -> None:
    arrays = _good_arrays()
    a = Dataset("a", arrays["features"], arrays["labels"])
    b = Dataset("b", arrays["features"].copy(), arrays["labels"].copy())
    assert dataset_sha256(a) == dataset_sha256(b)
    changed = arrays["labels"].copy()
    changed[0] += 1
    assert dataset_sha256(Dataset("a", arrays["features"], changed)) != dataset_sha256(a)
    reshaped = Dataset("a", arrays["features"].reshape(6, 2, 2), arrays["labels"])
    assert dataset_sha256(reshaped) != dataset_sha256(a)


# --- the built-in sequence datasets, and sequences with lengths ---------------------------

@pytest.mark.parametrize("name", ["digits", "parity", "majority", "addition"])
def test_builtin_facts_the_gateway_publishes(name: str) -> None:
    from gateway.datasets import BUILTIN

    dataset, record = builtin_dataset(name), BUILTIN[name]
    assert record.num_samples == dataset.num_samples
    assert tuple(record.feature_shape) == dataset.sample_shape
    assert record.num_classes == int(dataset.labels.max()) + 1
    assert record.sha256 == dataset_sha256(dataset)


@pytest.mark.parametrize("name", ["parity", "majority"])
def test_sequence_datasets_are_deterministic(name: str) -> None:
    one, two = builtin_dataset(name), builtin_dataset(name)
    assert one.lengths is not None and two.lengths is not None
    for a, b in ((one.features, two.features), (one.labels, two.labels),
                 (one.lengths, two.lengths)):
        np.testing.assert_array_equal(a, b)


def _rows(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dataset = builtin_dataset(name)
    assert dataset.lengths is not None
    return dataset.features.astype(np.int64), dataset.lengths, dataset.labels


def test_parity_labels() -> None:
    tokens, lengths, labels = _rows("parity")
    assert set(np.unique(tokens)) == {0, 1, 2}
    assert lengths.min() == 1 and lengths.max() == tokens.shape[1] == 20
    for row, n, label in zip(tokens, lengths, labels, strict=True):
        assert (row[n:] == 0).all() and (row[:n] > 0).all()
        assert label == (row[:n] == 1).sum() % 2
    assert 0.45 < labels.mean() < 0.55  # balanced: chance is 0.5


def test_majority_labels() -> None:
    tokens, lengths, labels = _rows("majority")
    assert tokens.max() == 15 and lengths.min() >= 8 and tokens.shape[1] == 32
    for row, n, label in zip(tokens, lengths, labels, strict=True):
        assert (row[n:] == 0).all() and (row[:n] > 0).all()
        counts = [int((row == k).sum()) for k in (1, 2, 3, 4)]
        assert counts.count(max(counts)) == 1 and counts.index(max(counts)) == label
    assert np.bincount(labels).min() > 400  # about balanced: chance is 0.25


def test_present_takes_sequences_as_they_are() -> None:
    parity = builtin_dataset("parity")
    assert present(parity, (-1, -1)) is parity
    with pytest.raises(InvalidArgument) as exc:
        present(builtin_dataset("digits"), (-1, -1))
    assert _field_of(exc) == "dataset"
    with pytest.raises(InvalidArgument):
        present(parity, (-1, 64))


def test_uploaded_sequences_keep_their_lengths() -> None:
    features = np.array([[1, 2, 0], [3, 0, 0]], np.float32)
    data = _npz(features=features, labels=np.array([0, 1]), lengths=np.array([2, 1]))
    dataset = load_npz_bytes(data)
    assert dataset.lengths is not None and dataset.lengths.tolist() == [2, 1]
    without = load_npz_bytes(_npz(features=features, labels=np.array([0, 1])))
    assert without.lengths is None
    assert dataset_sha256(dataset) != dataset_sha256(without)


@pytest.mark.parametrize("lengths", [np.array([2]), np.array([0, 1]), np.array([1, 4]),
                                     np.array([1.0, 2.0]), np.array([[1, 2]])])
def test_bad_lengths(lengths: np.ndarray) -> None:
    features = np.zeros((2, 3), np.float32)
    with pytest.raises(InvalidArgument) as exc:
        load_npz_bytes(_npz(features=features, labels=np.array([0, 1]), lengths=lengths))
    assert _field_of(exc) == "lengths"


# --- hostile files (issue 12): headers are checked before anything is allocated -------------

@pytest.mark.parametrize(("name", "field"), [
    ("npy_shape_1e12", "features"),  # was numpy's allocation failure, INTERNAL
    ("npy_shape_2e9_rows", "features"),
    ("npy_object_dtype", "features"),
    ("npy_negative_dim", "features"),
    ("labels_2e31", "labels"),  # num_classes overflowed int32 in the registry record: INTERNAL
    ("labels_65536", "labels"),
    ("labels_negative", "labels"),
    ("not_a_zip", "dataset"),
    ("safetensors_labels_2e31", "labels"),
    ("safetensors_shape_1e12", "dataset"),
    ("safetensors_length_2e64", "dataset"),
    ("safetensors_deep_json", "dataset"),
    ("safetensors_huge_int", "dataset"),
])
def test_hostile_dataset_is_invalid_argument(name: str, field: str) -> None:
    file_format, data = HOSTILE_DATASETS[name]
    loader = load_npz_bytes if file_format == "npz" else load_safetensors_bytes
    with pytest.raises(InvalidArgument) as exc:
        loader(data)
    assert _field_of(exc) == field


def test_npy_header_declaring_more_than_its_bytes_says_both() -> None:
    with pytest.raises(InvalidArgument) as exc:
        load_npz_bytes(HOSTILE_DATASETS["npy_shape_1e12"][1])
    assert "8000000000000 bytes" in exc.value.message and "holds 64 bytes" in exc.value.message


def test_largest_class_id_is_accepted() -> None:
    loaded = load_npz_bytes(npz_with_labels([0, MAX_CLASSES - 1]))
    assert int(loaded.labels.max()) == MAX_CLASSES - 1


@pytest.mark.parametrize("name", ["good", "good_safetensors"])
def test_well_formed_files_pass_the_header_checks(name: str) -> None:
    file_format, data = HOSTILE_DATASETS[name]
    loader = load_npz_bytes if file_format == "npz" else load_safetensors_bytes
    assert loader(data).num_samples == 4


def test_npy_format_2_header_is_read() -> None:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.zeros((3, 2), np.float32), version=(2, 0))
    data = npz_bytes({"features": out.getvalue(), "labels": npy_bytes(np.arange(3))})
    assert load_npz_bytes(data).sample_shape == (2,)
