"""Whether a model version may serve: its format (an archive is code) and its state
(an archive serves once verified, never once quarantined or rejected)."""

from __future__ import annotations

from maas.errors import ModelQuarantined, ModelRejected, ModelVerifying
from maas.v1.model_service_pb2 import ModelFormat, ModelVersion, ModelVersionState
from scheduler.model_names import _shown

# The enum values, read once: a protobuf enum's attribute is a Python lookup per use, and
# these are read for every inference call.
_ARCHIVES = frozenset({ModelFormat.MODEL_FORMAT_TORCHSCRIPT, ModelFormat.MODEL_FORMAT_TORCH_EXPORT})
_READY = ModelVersionState.MODEL_VERSION_STATE_READY
_UNSPECIFIED = ModelVersionState.MODEL_VERSION_STATE_UNSPECIFIED


def is_archive(version: ModelVersion) -> bool:
    """Code (TorchScript or torch.export), as opposed to safetensors weights (data)."""
    return version.format in _ARCHIVES


def is_servable(version: ModelVersion) -> bool:
    try:
        check_state(version)
    except (ModelVerifying, ModelQuarantined, ModelRejected):
        return False
    return True


def check_state(version: ModelVersion) -> None:
    """Raises unless the version may serve: an archive must be READY (verified, not
    quarantined); weights are READY from the start."""
    state = version.state
    if state == _READY or (state == _UNSPECIFIED and version.format not in _ARCHIVES):
        return
    named = f"version {version.version} of model {_shown(version.model)}"
    if state == ModelVersionState.MODEL_VERSION_STATE_VERIFYING:
        raise ModelVerifying(f"{named} is being verified and serves once it passes")
    if state == ModelVersionState.MODEL_VERSION_STATE_QUARANTINED:
        raise ModelQuarantined(f"{named} is quarantined: {version.state_reason}; register a "
                               "fixed version")
    if state == ModelVersionState.MODEL_VERSION_STATE_REJECTED:
        raise ModelRejected(f"{named} was rejected by verification: {version.state_reason}")
    raise ModelRejected(f"{named} is an archive registered before verification existed; "
                        "register it again to have it verified")
