"""How the console shows values: sizes, times, digests and enum names (Jinja filters).
Every filter returns plain text; Jinja escapes it like any other value."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from maas.v1 import model_service_pb2 as mpb
from maas.v1 import training_service_pb2 as tpb

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: int) -> str:
    """1536 → "1.5 KiB"."""
    value = float(n)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(ts: Timestamp) -> str:
    """A timestamp as UTC, to the second; "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts: Timestamp, now_s: float | None = None) -> str:
    """How long before now: "4 s ago", "3 min ago", "2 h ago"; "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    elapsed_s = max(0.0, (time.time() if now_s is None else now_s) - ts.ToNanoseconds() / 1e9)
    if elapsed_s < 120:
        return f"{elapsed_s:.0f} s ago"
    if elapsed_s < 7200:
        return f"{elapsed_s / 60:.0f} min ago"
    return f"{elapsed_s / 3600:.0f} h ago"


def short(digest: str, n: int = 12) -> str:
    return digest[:n] if digest else "-"


def pretty_json(text: str) -> str:
    """A JSON document indented for reading (a training spec's `config_json` expanded); as
    given when it is not JSON."""
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("config_json"), str):
            doc["config"] = json.loads(doc.pop("config_json") or "null")
        return json.dumps(doc, indent=2, sort_keys=True)
    except ValueError:
        return text


def training_state(state: int) -> str:
    return tpb.TrainingJob.State.Name(state)  # type: ignore[arg-type]


def model_format(fmt: int) -> str:
    name = mpb.ModelFormat.Name(fmt)  # type: ignore[arg-type]
    return "safetensors" if fmt == mpb.MODEL_FORMAT_UNSPECIFIED else (
        name.removeprefix("MODEL_FORMAT_").lower())


def version_state(state: int) -> str:
    if state == mpb.MODEL_VERSION_STATE_UNSPECIFIED:
        return "ready"
    return mpb.ModelVersionState.Name(state).removeprefix(  # type: ignore[arg-type]
        "MODEL_VERSION_STATE_").lower()


def spec_json(spec: tpb.TrainingSpec) -> str:
    """A training spec as indented JSON, its config expanded."""
    return pretty_json(json_format.MessageToJson(spec, preserving_proto_field_name=True))


def number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}"


FILTERS: dict[str, Any] = {
    "size": size, "when": when, "ago": ago, "short": short, "pretty_json": pretty_json,
    "training_state": training_state, "model_format": model_format,
    "version_state": version_state, "number": number, "spec_json": spec_json,
}
