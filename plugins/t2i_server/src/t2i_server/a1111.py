"""The A1111 web UI's ``/sdapi/v1`` API subset that clients use, with the same JSON shapes.

Shapes follow A1111 v1.10.1 ``modules/api/models.py`` (``TextToImageResponse``:
``{images: [base64 PNG], parameters: the request, info: a JSON string}``). A1111's
diffusion knobs (sampler, scheduler, steps, CFG, eta) are ignored for recipes of other
families (a GAN, a token model), whose own knobs the native API takes. Scripts:
``script_name="prompt matrix"``, and ``"x/y/z plot"`` with ``script_args`` given as axis
names and value texts, ``[x_name, x_values, y_name, y_values, z_name, z_values]``.
``alwayson_scripts.controlnet``: the ControlNet extension's units, and its ``/controlnet``
routes (:mod:`t2i_server.controlnets`).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from t2i.infotext import parse_infotext
from t2i.request import RequestError
from t2i_server.images import (
    decode_base64,
    decode_image,
    infotext_of,
    job_preview,
    png_bytes,
    to_base64,
)
from t2i_server.jobs import Job
from t2i_server.memory import memory_report
from t2i_server.state import Selection, Server, checked_clip_skip

router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])
controlnet_router = APIRouter(prefix="/controlnet", tags=["controlnet"])
VARIATION_FIELDS = ("subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h")
"""A1111's variation-seed fields (the initial noise: diffusion recipes only)."""
DIFFUSION_ONLY = ("sampler", "schedule", "steps", "cfg_scale", "eta", *VARIATION_FIELDS)


class Txt2ImgRequest(BaseModel):
    """``POST /sdapi/v1/txt2img`` (unknown keys are accepted and ignored, as A1111's)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int | None = None
    cfg_scale: float | None = None
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    n_iter: int = 1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    eta: float | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    script_name: str | None = None
    script_args: list[Any] = []
    alwayson_scripts: dict[str, Any] = {}
    send_images: bool = True
    save_images: bool = False


class Img2ImgRequest(Txt2ImgRequest):
    """``POST /sdapi/v1/img2img``: ``init_images`` (base64), ``denoising_strength``."""

    init_images: list[Any] = []
    denoising_strength: float | None = 0.75
    resize_mode: int = 0
    include_init_images: bool = False
    # inpainting, with A1111's API defaults (StableDiffusionProcessingImg2Img)
    mask: str | None = None
    mask_blur: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0


class PngInfoRequest(BaseModel):
    image: str


def server_of(request: Request) -> Server:
    return request.app.state.t2i


def error_response(job_or_error: Any) -> JSONResponse:
    error = job_or_error.error if isinstance(job_or_error, Job) else job_or_error
    return JSONResponse(error.as_dict(), status_code=error.status)


def _fields(server: Server, body: Txt2ImgRequest, model: Selection, img2img: bool) -> dict:
    """A1111 request fields -> t2i request fields for ``model``."""
    fields: dict[str, Any] = {
        "negative_prompt": body.negative_prompt,
        "seed": body.seed,
        "batch_size": body.batch_size,
        "batch_count": body.n_iter,
    }
    for ours, theirs in (("steps", "steps"), ("cfg_scale", "cfg_scale"), ("eta", "eta")):
        if getattr(body, theirs) is not None:
            fields[ours] = getattr(body, theirs)
    if body.subseed_strength > 0:
        fields.update(subseed=body.subseed, subseed_strength=body.subseed_strength)
    if body.seed_resize_from_w > 0 and body.seed_resize_from_h > 0:
        fields.update(seed_resize_from_w=body.seed_resize_from_w)
        fields.update(seed_resize_from_h=body.seed_resize_from_h)
    if body.width is not None:
        fields["width"] = body.width
    if body.height is not None:
        fields["height"] = body.height
    sampler = body.sampler_name or body.sampler_index
    if sampler:
        fields["sampler"] = sampler
    if body.scheduler and body.scheduler.strip().lower() != "automatic":
        fields["schedule"] = body.scheduler
    family = server.family_of(model)
    if family and family != "diffusion":
        for name in DIFFUSION_ONLY:
            fields.pop(name, None)
    if img2img:
        if not body.init_images:
            raise RequestError("init_images", "give one base64 image to start from")
        fields["init_image"] = decode_image("init_images", body.init_images[0])
        if body.denoising_strength is not None:
            fields["strength"] = body.denoising_strength
        if body.mask:
            fields["mask"] = _decode_mask(body.mask)
            fields.update({k: getattr(body, k) for k in INPAINT_FIELDS})
    return fields


def _decode_mask(text: str) -> Any:
    """The base64 ``mask``, checked as an image; an RGBA one keeps its alpha (a painted
    mask: A1111 reads the alpha)."""
    import io

    from PIL import Image

    rgb = decode_image("mask", text)
    raw = Image.open(io.BytesIO(decode_base64("mask", text)))
    return raw if raw.mode == "RGBA" else rgb


INPAINT_FIELDS = (
    "mask_blur",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
)


def _script(body: Txt2ImgRequest) -> tuple[str, list[str]]:
    name = (body.script_name or "").strip().lower()
    if not name:
        return "generate", []
    if name == "prompt matrix":
        return "matrix", []
    if name in ("x/y/z plot", "xyz plot", "x/y/z", "xyz"):
        args = list(body.script_args)
        if len(args) < 2 or len(args) % 2 or not all(isinstance(a, str) for a in args):
            raise RequestError(
                "script_args",
                "x/y/z plot takes [x_name, x_values, y_name, y_values, z_name, z_values] "
                'as strings, e.g. ["CFG Scale", "3,5,7", "Sampler", "Euler,DPM++ 2M"]',
            )
        return "xyz", [f"{args[i]}={args[i + 1]}" for i in range(0, len(args), 2) if args[i]]
    raise RequestError("script_name", f"no script {body.script_name!r}; scripts: {SCRIPTS}")


SCRIPTS = ["prompt matrix", "x/y/z plot"]


def _generate(server: Server, body: Txt2ImgRequest, img2img: bool) -> JSONResponse | dict:
    try:
        settings = body.override_settings or {}
        override = settings.get("sd_model_checkpoint")
        model = server.select(override if override else server.current)
        mode, axes = _script(body)
        fields = _fields(server, body, model, img2img)
        job = server.make_job(
            recipe=model.title,
            prompt=body.prompt,
            fields=fields,
            mode=mode,
            axes=axes,
            vae=settings.get("sd_vae"),
            clip_skip=settings.get("CLIP_stop_at_last_layers"),
            alwayson_scripts=body.alwayson_scripts,
        )
    except RequestError as exc:
        return _unprocessable(exc)
    server.submit(job).done.wait()
    if job.error is not None:
        return error_response(job)
    return _response(server, job, body)


def _response(server: Server, job: Job, body: Txt2ImgRequest) -> dict[str, Any]:
    indices = ([-1] if job.grid is not None else []) + list(range(len(job.images)))
    images = [to_base64(job.png(i)) for i in indices] if body.send_images else []
    infotexts = ([job.infotexts[0]] if job.grid is not None and job.infotexts else []) + list(
        job.infotexts
    )
    params = job.metadata.get("parameters", {})
    parsed = parse_infotext(job.infotexts[0]) if job.infotexts else {}
    info = {
        "prompt": job.prompt,
        "all_prompts": list(job.prompts),
        "negative_prompt": body.negative_prompt,
        "all_negative_prompts": [body.negative_prompt] * len(job.images),
        "seed": job.seeds[0] if job.seeds else body.seed,
        "all_seeds": list(job.seeds),
        "subseed": job.subseeds[0] if job.subseeds else -1,
        "all_subseeds": list(job.subseeds) or [-1] * len(job.images),
        "subseed_strength": body.subseed_strength,
        "seed_resize_from_w": body.seed_resize_from_w,
        "seed_resize_from_h": body.seed_resize_from_h,
        "width": params.get("width", body.width),
        "height": params.get("height", body.height),
        "sampler_name": parsed.get("Sampler"),
        "cfg_scale": params.get("cfg_scale", body.cfg_scale),
        "steps": params.get("steps", body.steps),
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": parsed.get("Model", job.model_name),
        "sd_model_hash": parsed.get("Model hash"),
        "sd_vae_name": parsed.get("VAE"),
        "sd_vae_hash": parsed.get("VAE hash"),
        "denoising_strength": params.get("strength")
        if getattr(body, "init_images", None)
        else None,
        "extra_generation_params": {
            "Schedule type": parsed.get("Schedule type"),
            **{k: v for k, v in parsed.items() if k.startswith("ControlNet")},
        },
        "index_of_first_image": 1 if job.grid is not None else 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.submitted)),
        "clip_skip": int(parsed.get("Clip skip", 1)),
        "is_using_inpainting_conditioning": False,
        "version": job.metadata.get("t2i_version", ""),
        "interrupted": job.status == "cancelled",
    }
    parameters = body.model_dump()
    parameters.pop("init_images", None)
    if parameters.get("mask"):
        parameters["mask"] = None  # as A1111: the images are not echoed
    parameters["alwayson_scripts"] = _without_images(body.alwayson_scripts)
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _without_images(scripts: dict[str, Any]) -> dict[str, Any]:
    """``alwayson_scripts`` as echoed: the ControlNet units' images left out (None)."""
    from t2i_server.controlnets import SCRIPT

    out = dict(scripts)
    for key, entry in scripts.items():
        units = entry.get("args") if isinstance(entry, dict) else None
        if key.lower() == SCRIPT and isinstance(units, list):
            images = ("image", "input_image", "mask")
            args = [{**u, **{k: None for k in images if k in u}} if isinstance(u, dict) else u
                    for u in units]  # fmt: skip
            out[key] = {**entry, "args": args}
    return out


@router.post("/txt2img")
def txt2img(body: Txt2ImgRequest, request: Request):
    """Generate from a prompt (A1111 ``StableDiffusionProcessingTxt2Img`` fields)."""
    return _generate(server_of(request), body, img2img=False)


@router.post("/img2img")
def img2img(body: Img2ImgRequest, request: Request):
    """Generate from ``init_images[0]`` (base64) at ``denoising_strength``."""
    return _generate(server_of(request), body, img2img=True)


@router.post("/png-info")
def png_info(body: PngInfoRequest):
    """The infotext of a base64 image: ``{info, items, parameters}``."""
    try:
        text = infotext_of(decode_base64("image", body.image)) or ""
    except RequestError as exc:
        return _unprocessable(exc)
    parsed = parse_infotext(text) if text else {}
    return {"info": text, "items": {"parameters": text} if text else {}, "parameters": parsed}


@router.post("/interrupt")
def interrupt(request: Request):
    """Stop the running job; it returns the images finished so far."""
    server_of(request).worker.interrupt()
    return {}


@router.post("/skip")
def skip(request: Request):
    """Stop the running job's current batch; the next batch runs."""
    server_of(request).worker.skip()
    return {}


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False):
    """``{progress, eta_relative, state, current_image, textinfo}`` of the running job."""
    server = server_of(request)
    job = server.worker.current
    pending = server.worker.pending()
    state = {
        "skipped": bool(job and job.skipped),
        "interrupted": bool(job and job.interrupted),
        "stopping_generation": False,
        "job": f"task({job.id})" if job else "",
        "job_count": pending,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(job.submitted))
        if job
        else "0",
        "job_no": job.batch if job else 0,
        "sampling_step": job.step if job else 0,
        "sampling_steps": job.total if job else 0,
    }
    image = None
    preview = job_preview(job) if job is not None and not skip_current_image else None
    if preview is not None:
        image = to_base64(png_bytes(preview, None))
    text = None
    if job is not None:
        text = f"{job.model_name}: batch {job.batch + 1}/{job.batches}, step {job.step}/{job.total}"
    return {
        "progress": round(job.fraction(), 4) if job else 0.0,
        "eta_relative": round(job.eta(), 3) if job else 0.0,
        "state": state,
        "current_image": image,
        "textinfo": text,
    }


@router.get("/samplers")
def samplers(request: Request):
    """``[{name, aliases, options}]``: every registered sampler, web-UI label first."""
    out = []
    for e in server_of(request).registry.entries("sampler"):
        label = e.aliases[0] if e.aliases else e.name
        options = {"model_contract": e.model_contract} if e.model_contract else {}
        out.append({"name": label, "aliases": [e.name, *e.aliases[1:]], "options": options})
    return out


@router.get("/schedulers")
def schedulers(request: Request):
    """``[{name, label, aliases, default_rho, need_inner_model}]``, Automatic first."""
    out = [
        {
            "name": "automatic",
            "label": "Automatic",
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
    ]
    for e in server_of(request).registry.entries("schedule"):
        label = e.aliases[0] if e.aliases else e.name
        out.append(
            {
                "name": e.name,
                "label": label,
                "aliases": list(e.aliases[1:]) or None,
                "default_rho": 7.0 if e.name == "karras" else -1,
                "need_inner_model": False,
            }
        )
    return out


@router.get("/sd-models")
def sd_models(request: Request):
    """Every recipe of every family, then every checkpoint of the models folder
    (``--ckpt-dir``): ``[{title, model_name, hash, sha256, filename, config, family, ...}]``;
    a checkpoint's entry also names its ``recipe``."""
    server = server_of(request)
    out = []
    for e in server.registry.entries("recipe"):
        info = server.recipe_info(e.name)
        out.append(
            {
                "title": e.name,
                "model_name": e.name,
                "hash": info.get("model_hash"),
                "sha256": None,
                "filename": f"recipe:{e.name} ({e.plugin})",
                "config": None,
                "recipe": e.name,
                "family": info.get("family"),
                "format": "recipe",
                "description": e.description,
            }
        )
    return out + [c.as_a1111() for c in server.models.checkpoints]


def _options(server: Server) -> dict[str, Any]:
    try:
        model = server.select(server.current)
    except RequestError:  # a checkpoint removed from the models folder since it was chosen
        model = None
    if model is None:
        checkpoint_hash = None
    elif model.checkpoint is not None:
        checkpoint_hash = model.checkpoint.sha256
    else:
        checkpoint_hash = server.recipe_info(model.recipe).get("model_hash")
    return {
        "sd_model_checkpoint": server.current,
        "sd_checkpoint_hash": checkpoint_hash,
        "samples_format": "png",
        "show_progress_every_n_steps": 1,
        "live_previews_enable": True,
        "sd_vae": server.current_vae,
        "CLIP_stop_at_last_layers": server.clip_skip,
        "t2i_max_models": server.settings.max_models,
    }


@router.get("/options")
def get_options(request: Request):
    """The settings; ``sd_model_checkpoint`` is the selected recipe."""
    return _options(server_of(request))


@router.post("/options")
def set_options(body: dict[str, Any], request: Request):
    """Set ``sd_model_checkpoint`` (a recipe or a models-folder checkpoint's title),
    ``sd_vae`` (``Automatic``, ``None`` or a ``/sd-vae`` name) and
    ``CLIP_stop_at_last_layers`` (clip skip, for SD checkpoints): the model is loaded as set
    before answering, after the jobs queued before it; a value that cannot be used is a 422
    saying why, and changes nothing. Other settings are ignored."""
    server = server_of(request)
    keys = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
    if not any(k in body for k in keys):
        return None
    vae = body.get("sd_vae", server.current_vae)
    try:
        name = server.select(body.get("sd_model_checkpoint", server.current)).title
        server.vae_named(vae)
        skip = checked_clip_skip(body.get("CLIP_stop_at_last_layers", server.clip_skip))
        job = server.make_job(recipe=name, mode="load", vae_setting=vae, clip_skip=skip)
    except RequestError as exc:
        return _unprocessable(exc)
    server.submit(job).done.wait()
    if job.error is not None:
        job.error.field = job.error.field or next(k for k in keys if k in body)
        return error_response(job)
    server.current, server.current_vae, server.clip_skip = name, vae, skip
    return None


def _unprocessable(exc: RequestError) -> JSONResponse:
    return JSONResponse(
        {"error": "RequestError", "field": exc.field, "detail": str(exc)}, status_code=422
    )


@router.get("/sd-vae")
def sd_vae(request: Request):
    """The VAE folder's VAEs (``--vae-dir``): ``[{model_name, filename}]``."""
    return [v.as_a1111() for v in server_of(request).vaes]


@router.post("/refresh-vae")
def refresh_vae(request: Request):
    """Rescan the VAE folder (``--vae-dir``)."""
    server_of(request).refresh_vaes()
    return None


@router.get("/cmd-flags")
def cmd_flags(request: Request):
    """How the server was started (A1111's ``cmd-flags`` keys where they mean the same)."""
    s = server_of(request).settings
    return {
        "listen": s.host not in ("127.0.0.1", "localhost", "::1"),
        "server_name": s.host,
        "port": s.port,
        "api": True,
        "nowebui": False,
        "api_auth": bool(s.token),
        "insecure": s.insecure,
        "max_models": s.max_models,
        "max_body_bytes": s.max_body_bytes,
        "device": s.device or "cpu",
        "dtype": s.dtype or "float32",
    }


@router.get("/loras")
def loras(request: Request):
    """The LoRA folder's files (``--lora-dir``, what ``<lora:NAME:w>`` finds) as A1111
    lists them, then LoRA adapters a plugin registers (the ``lora`` kind)."""
    from t2i_server.loras import lora_entries

    server = server_of(request)
    out = lora_entries(server.settings.lora_dir)
    try:
        entries = server.registry.entries("lora")
    except Exception:  # the kind is not registrable in this core
        entries = []
    return out + [{"name": e.name, "alias": e.name, "path": e.plugin, "metadata": {}}
                  for e in entries]  # fmt: skip


@router.get("/embeddings")
def embeddings(request: Request):
    """The embeddings folder (``--embeddings-dir``) as A1111: ``{loaded, skipped}``."""
    from t2i_server.embeddings import embedding_entries

    settings = server_of(request).settings
    return embedding_entries(settings.embeddings_dir, allow_pickle=settings.allow_pickle)


@router.post("/refresh-embeddings")
def refresh_embeddings():
    """A1111 clients call it after adding files; the folder is read at each use."""
    return None


@router.post("/refresh-loras")
def refresh_loras():
    """A1111 clients call it after adding files; ``/loras`` reads the folder each time."""
    return None


@router.get("/memory")
def memory(request: Request):
    """``{ram, cuda, models}``: process and system memory, CUDA memory, loaded models."""
    server = server_of(request)
    return memory_report(server.cache)


@router.get("/scripts")
def scripts():
    """``{txt2img: [...], img2img: [...]}``: the scripts ``script_name`` takes."""
    return {"txt2img": list(SCRIPTS), "img2img": list(SCRIPTS)}


@router.get("/script-info")
def script_info():
    return [
        {"name": name, "is_alwayson": False, "is_img2img": img2img, "args": []}
        for name in SCRIPTS
        for img2img in (False, True)
    ]


def _empty(path: str, value: Any):
    def route():
        return value

    route.__name__ = "empty_" + path.replace("-", "_")
    route.__doc__ = f"``{path}``: t2i has none (A1111 clients ask for it)."
    router.get(f"/{path}")(route)


for _path, _value in (
    ("upscalers", []),
    ("latent-upscale-modes", []),
    ("hypernetworks", []),
    ("face-restorers", []),
    ("realesrgan-models", []),
    ("prompt-styles", []),
    ("extensions", []),
):
    _empty(_path, _value)


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request):
    """Rescan the models folder (``--ckpt-dir``); recipes are registered by plugins at start."""
    server_of(request).refresh_models()
    return None


@controlnet_router.get("/model_list")
def controlnet_model_list(request: Request, update: bool = False):
    """The ControlNet folder's models (``--controlnet-dir``) by the extension's names,
    ``{"model_list": ["NAME [HASH]", ...]}``; ``update=true`` rescans the folder first."""
    server = server_of(request)
    if update:
        server.refresh_controlnets()
    return {"model_list": [c.title for c in server.controlnets if c.path.exists()]}


@controlnet_router.get("/module_list")
def controlnet_module_list():
    """The preprocessors a unit's ``module`` takes (``none``: the image is a ready map) and
    their sliders, ``{"module_list": [...], "module_detail": {name: {model_free, sliders}}}``."""
    from t2i_server.controlnets import modules

    detail = modules()
    return {"module_list": list(detail), "module_detail": detail}


@controlnet_router.get("/version")
def controlnet_version():
    """The ControlNet extension API version these routes follow."""
    from t2i_server.controlnets import API_VERSION

    return {"version": API_VERSION}
