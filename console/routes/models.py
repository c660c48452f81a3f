"""Models: every model the caller may see; one model's versions (format, size, sha256,
created, aliases) and, for a trained version, its lineage (training job, dataset, spec, final
metrics)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from console.pages import client_for, render
from maas.v1 import model_service_pb2 as mpb


def aliases_by_version(model: mpb.Model) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for alias, version in sorted(model.aliases.items()):
        found.setdefault(version, []).append(alias)
    return found


def version_size(version: mpb.ModelVersion) -> int:
    return version.archive_bytes or version.weights_bytes


async def list_page(request: Request) -> Response:
    models = await (await client_for(request)).list_models()
    return render(request, "models.html", {"models": models})


async def model_page(request: Request) -> Response:
    model = await (await client_for(request)).get_model(request.path_params["name"])
    return render(request, "model.html", {
        "model": model, "versions": list(reversed(model.versions)),
        "aliases": aliases_by_version(model), "version_size": version_size})


ROUTES = [
    Route("/models", list_page),
    Route("/models/{name}", model_page),
]
