"""Try a model: draw a digit on a canvas (or upload an .npy) and see the outputs; Explain
shows the Integrated-Gradients attributions as a heat map over the input. The page's script
posts the input as an .npy body with the CSRF token in a header; the answer is JSON."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.pages import client_for, render
from console.trying import heatmap, input_spec, latest_version, outputs_summary, read_npy
from maas.errors import MaasError, ModelNotFound

PREFERRED = ("digits-cnn", "cnn")


async def try_page(request: Request) -> Response:
    models = await (await client_for(request)).list_models()
    names = [m.name for m in models]
    chosen = request.query_params.get("model") or next(
        (n for n in PREFERRED if n in names), names[0] if names else "")
    model = next((m for m in models if m.name == chosen), None)
    version = latest_version(model) if model is not None else None
    spec = input_spec(version) if version is not None else None
    return render(request, "try.html", {"names": names, "chosen": chosen, "version": version,
                                        "spec": spec})


async def run(request: Request) -> Response:
    """POST /try/{model}/infer or /explain, the body an .npy input; JSON back. A maas error
    is JSON too ({code, message}), with the HTTP status that matches it."""
    name, action = request.path_params["model"], request.path_params["action"]
    if action not in ("infer", "explain"):
        return JSONResponse({"code": "NOT_FOUND", "message": action}, status_code=404)
    client = await client_for(request)
    version_name = request.query_params.get("version", "")
    try:
        model = await client.get_model(name)
        version = latest_version(model, version_name)
        spec = input_spec(version) if version is not None else None
        if spec is None:
            raise ModelNotFound(f"model {name!r} has no version with inputs")
        inputs = read_npy(await request.body(), spec)
        if action == "explain":
            explanation = await client.explain(name, {spec.name: inputs}, version=version_name)
            return JSONResponse(heatmap(explanation, inputs, spec))
        outputs = await client.infer(name, {spec.name: inputs}, version=version_name)
        return JSONResponse(outputs_summary(outputs))
    except MaasError as err:
        status = {"NOT_FOUND": 404, "PERMISSION_DENIED": 403, "INVALID_ARGUMENT": 400,
                  "UNAUTHENTICATED": 401}.get(err.code.name, 502)
        return JSONResponse({"code": err.code.name, "message": err.message}, status_code=status)


ROUTES = [
    Route("/try", try_page),
    Route("/try/{model}/{action:str}", run, methods=["POST"]),
]
