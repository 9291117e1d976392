"""The native API (``/t2i/v1``): what A1111's cannot say.

- ``GET /t2i/v1/recipes``: every recipe with its family, request fields and defaults, and the
  models folder's checkpoints (a checkpoint's title works as a job's ``recipe``);
- ``GET /t2i/v1/model-info?name=TITLE``: the same description of one recipe or checkpoint
  (a checkpoint's recipe built with it: its fields, defaults and family); both say
  ``controlnet``: whether the model takes ControlNet units;
- ``POST /t2i/v1/jobs``: ``{"recipe": NAME, "options": {...}, "prompt": ..., "request":
  {field: value}}`` or ``{"graph": GRAPH_JSON, ...}`` (the engine's own graph format, as
  ``t2i graph show --format json`` writes it); ``"xyz": ["cfg_scale=3,5", ...]`` makes it
  an X/Y/Z plot and ``"mode": "matrix"`` a prompt matrix; ``"alwayson_scripts"`` takes
  the ControlNet extension's units as txt2img does. Answers ``202 {id, status}``;
- ``GET /t2i/v1/jobs`` and ``/jobs/{id}``: status, progress, seeds and infotexts;
- ``GET /t2i/v1/jobs/{id}/events``: Server-Sent Events: ``progress`` (step, steps, batch,
  progress, eta) while it runs, then one ``done`` / ``error`` / ``cancelled``;
- ``POST /t2i/v1/jobs/{id}/cancel``; ``GET /jobs/{id}/images/{n}.png`` (PNG bytes with the
  infotext), ``/jobs/{id}/grid.png``, ``/jobs/{id}/preview.png`` (the live preview).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict

from t2i.request import RequestError
from t2i_server.images import decode_image, job_preview, png_bytes
from t2i_server.jobs import FINISHED
from t2i_server.state import Server

router = APIRouter(prefix="/t2i/v1", tags=["t2i"])
MODES = ("generate", "xyz", "matrix")


class JobRequest(BaseModel):
    """A job: a recipe (default: the selected model) with options, or a graph JSON."""

    model_config = ConfigDict(extra="forbid")

    recipe: str | None = None
    options: dict[str, Any] = {}
    graph: dict[str, Any] | None = None
    prompt: str = ""
    request: dict[str, Any] = {}
    xyz: list[str] = []
    mode: str = "generate"
    vae: str | None = None
    """An ``/sdapi/v1/sd-vae`` name (or ``Automatic``) for this job, as the ``sd_vae``
    setting: a model that takes no VAE ignores it."""
    alwayson_scripts: dict[str, Any] | None = None
    """The A1111 extensions' arguments, as txt2img takes them: the ControlNet extension's
    units, ``{"controlnet": {"args": [unit, ...]}}``; in img2img a unit without an image
    steers with ``request.init_image``."""


def _server(request: Request) -> Server:
    return request.app.state.t2i


def _bad(field: str, message: str, status: int = 422) -> JSONResponse:
    return JSONResponse(
        {"error": "RequestError", "field": field, "detail": f"{field}: {message}"},
        status_code=status,
    )


def _missing(job_id: str) -> JSONResponse:
    return JSONResponse(
        {"error": "NotFound", "field": "id", "detail": f"no job {job_id!r}"}, status_code=404
    )


class InfotextRequest(BaseModel):
    text: str


@router.post("/infotext")
def infotext(body: InfotextRequest):
    """An infotext parsed as A1111 parses it (``Prompt``, ``Steps``, ``Size-1`` ...)."""
    from t2i.infotext import parse_infotext

    return {"parameters": parse_infotext(body.text)}


@router.get("/recipes")
def recipes(request: Request):
    """Every recipe (name, family, the request fields it binds, defaults, img2img) and the
    models folder's checkpoints (``/sdapi/v1/sd-models`` entries; ``recipe`` takes a title)."""
    server = _server(request)
    out = [
        _described(server, server.recipe_info(e.name)) for e in server.registry.entries("recipe")
    ]
    checkpoints = [c.as_a1111() for c in server.models.checkpoints]
    return {"current": server.current, "recipes": out, "checkpoints": checkpoints}


@router.get("/model-info")
def model_info(name: str, request: Request):
    """One model's description (as ``/recipes`` gives a recipe's): a recipe, or a models-folder
    checkpoint's title, its recipe built with ``checkpoint=`` it (so what it reads from the
    checkpoint, such as sizes, is there; the page asks when a checkpoint is picked, so listing
    a folder of big checkpoints loads none of them). A name that is no model is a 422."""
    server = _server(request)
    try:
        return _described(server, server.model_info(name, "name"))
    except RequestError as exc:
        return JSONResponse(
            {"error": "RequestError", "field": exc.field, "detail": str(exc)}, status_code=422
        )


def _described(server: Server, info: dict[str, Any]) -> dict[str, Any]:
    """A model's description with ``controlnet``: whether its recipe takes ControlNet units
    (the rule :meth:`Server.controlnet_options` applies; the cached ``info`` is not changed)."""
    recipe = info.get("recipe") or info["name"]
    return {**info, "controlnet": server.recipe_takes(recipe, "controlnet")}


@router.post("/jobs", status_code=202)
def submit(body: JobRequest, request: Request):
    """Queue a job; ``202 {id, status}``. Bad fields are refused now (422 naming them)."""
    server = _server(request)
    mode = "xyz" if body.xyz else body.mode
    if mode not in MODES:
        return _bad("mode", f"must be one of {', '.join(MODES)}, got {body.mode!r}")
    if body.graph is not None and body.recipe is not None:
        return _bad("graph", "give a recipe or a graph, not both")
    if _asks_for_pickle(body.options) or _asks_for_pickle(body.graph):
        return _bad(
            "allow_pickle",
            "pickle checkpoints run code when loaded: they are not loaded over HTTP; "
            "convert the file to safetensors",
        )
    fields = dict(body.request)
    fields.pop("prompt", None)
    try:
        if fields.get("init_image") is not None:
            fields["init_image"] = decode_image("init_image", fields["init_image"])
        if body.xyz:
            from t2i.xyz import Axis

            for axis in body.xyz:
                Axis.parse(axis)
        job = server.make_job(
            recipe=body.recipe,
            options=body.options,
            graph=body.graph,
            prompt=body.prompt,
            fields=fields,
            mode=mode,
            axes=body.xyz,
            vae_setting=body.vae,
            alwayson_scripts=body.alwayson_scripts,
        )
    except RequestError as exc:
        return _bad(exc.field, str(exc).partition(": ")[2] or str(exc))
    server.submit(job)
    return {"id": job.id, "status": job.status, "model": job.model_name}


def _asks_for_pickle(value: Any, depth: int = 0) -> bool:
    """Whether a JSON value sets ``allow_pickle`` anywhere (bounded depth)."""
    if depth > 64:
        return True
    if isinstance(value, dict):
        if value.get("allow_pickle"):
            return True
        return any(_asks_for_pickle(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_asks_for_pickle(v, depth + 1) for v in value)
    return False


@router.get("/jobs")
def jobs(request: Request):
    """Every job the server remembers (the last finished ones and the queue)."""
    return [j.status_dict() for j in _server(request).worker.jobs()]


@router.get("/jobs/{job_id}")
def job_status(job_id: str, request: Request):
    job = _server(request).worker.get(job_id)
    return job.status_dict() if job else _missing(job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request):
    """Drop a queued job, or stop a running one at its next step."""
    job = _server(request).worker.cancel(job_id)
    return job.status_dict() if job else _missing(job_id)


@router.get("/jobs/{job_id}/images/{index}.png")
def image(job_id: str, index: int, request: Request):
    """Image ``index`` of a job as PNG bytes, the infotext in its ``parameters`` chunk."""
    job = _server(request).worker.get(job_id)
    if job is None:
        return _missing(job_id)
    if not 0 <= index < len(job.images):
        return _bad("index", f"job {job_id} has {len(job.images)} images", 404)
    return Response(job.png(index), media_type="image/png")


@router.get("/jobs/{job_id}/grid.png")
def grid(job_id: str, request: Request):
    job = _server(request).worker.get(job_id)
    if job is None:
        return _missing(job_id)
    if job.grid is None:
        return _bad("grid", f"job {job_id} has no grid (only plots and matrices do)", 404)
    return Response(job.png(-1), media_type="image/png")


@router.get("/jobs/{job_id}/preview.png")
def preview(job_id: str, request: Request):
    """The running job's latest sampler prediction (204 before the first step)."""
    job = _server(request).worker.get(job_id)
    if job is None:
        return _missing(job_id)
    image = job_preview(job)
    if image is None:
        return Response(status_code=204)
    return Response(
        png_bytes(image, None),
        media_type="image/png",
        headers={"Cache-Control": "no-store"},
    )


@router.get("/jobs/{job_id}/events")
async def events(job_id: str, request: Request):
    """Server-Sent Events of one job: ``progress`` while it runs, then its end."""
    job = _server(request).worker.get(job_id)
    if job is None:
        return _missing(job_id)

    async def stream():
        seen = -1
        while True:
            if await request.is_disconnected():
                return
            if job.version != seen:
                seen = job.version
                status = job.status_dict()
                if job.status in FINISHED:
                    event = {"done": "done", "error": "error"}.get(job.status, "cancelled")
                    yield f"event: {event}\ndata: {json.dumps(status)}\n\n"
                    return
                yield f"event: progress\ndata: {json.dumps(status)}\n\n"
            await asyncio.sleep(0.05)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
