"""The job queue: jobs run one at a time on one worker thread, each on its own model.

A1111 serialises generation behind one lock because a model switch or offload in the middle
of another request breaks it; here every job names its model when it is submitted, the
worker fetches that model from the :class:`~t2i_server.cache.ModelCache` before running it,
and nothing else touches a pipeline, so a request never runs on another request's model.

Cancellation: :meth:`Worker.cancel` drops a queued job, or stops a running one at its next
node or sampling step (the engine's :class:`~t2i.graph.errors.Cancelled`); the worker then
takes the next job. ``skip`` stops only the current batch (the web UI's Skip).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import attrs
import structlog

from t2i.graph.errors import Cancelled
from t2i.graph.nodes import SEED_RANGE
from t2i_server.cache import ModelCache, key_label

log = structlog.get_logger("t2i.server")

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)
PREVIEW_DECODE_EVERY = 0.25
"""Seconds between live previews decoded with the recipe's own decoder (in between, the
cheap latent view of :func:`~t2i_server.images.latent_preview`)."""
HISTORY = 256
"""Finished jobs kept for status and image requests."""


@attrs.define(eq=False)
class JobError:
    """Why a job failed: an HTTP status, the request field at fault (if any), the message."""

    status: int
    message: str
    field: str | None = None
    kind: str = "RequestError"

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.kind, "field": self.field, "detail": self.message}


@attrs.define(eq=False)
class Job:
    """One unit of work: generate (``batch_count`` batches), an X/Y/Z plot, a prompt
    matrix, or just loading a model (``mode="load"``).

    ``fields`` are :class:`~t2i.request.GenerationRequest` fields (the init image already
    decoded); ``model`` is the cache key, ``build`` makes the pipeline when it is missing;
    ``label`` names the model for people (a checkpoint's title; empty: from the key).
    """

    model: tuple
    build: Callable[[], Any]
    prompt: str = ""
    fields: dict[str, Any] = attrs.Factory(dict)
    mode: str = "generate"
    axes: list[str] = attrs.Factory(list)
    id: str = attrs.Factory(lambda: uuid.uuid4().hex)
    status: str = QUEUED
    submitted: float = attrs.Factory(time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total: int = 0
    node: str = ""
    batch: int = 0
    batches: int = 1
    images: list[Any] = attrs.Factory(list)
    seeds: list[int] = attrs.Factory(list)
    subseeds: list[int] = attrs.Factory(list)
    prompts: list[str] = attrs.Factory(list)
    infotexts: list[str] = attrs.Factory(list)
    grid: Any = None
    metadata: dict[str, Any] = attrs.Factory(dict)
    error: JobError | None = None
    preview: Any = None
    preview_image: Any = None
    preview_step: int = 0
    version: int = 0
    interrupted: bool = False
    skipped: bool = False
    done: threading.Event = attrs.Factory(threading.Event)
    label: str = ""
    _png_cache: dict[int, bytes] = attrs.Factory(dict)

    @property
    def model_name(self) -> str:
        """``label`` (a checkpoint's title) if set, else the cache key as people read it."""
        return self.label or key_label(self.model)

    def fraction(self) -> float:
        """Progress 0-1 over batches (or plot cells) and the current one's steps."""
        if self.status in FINISHED:
            return 1.0
        if self.status == QUEUED:
            return 0.0
        within = self.step / self.total if self.total else 0.0
        return min(1.0, (self.batch + within) / max(self.batches, 1))

    def eta(self) -> float:
        """Seconds left, from the time so far and :meth:`fraction`."""
        fraction = self.fraction()
        if self.started is None or fraction <= 0 or self.status in FINISHED:
            return 0.0
        elapsed = time.time() - self.started
        return elapsed / fraction - elapsed

    def status_dict(self) -> dict[str, Any]:
        """The job as the native API reports it (no image data)."""
        return {
            "id": self.id,
            "status": self.status,
            "mode": self.mode,
            "model": self.model_name,
            "prompt": self.prompt,
            "progress": round(self.fraction(), 4),
            "eta": round(self.eta(), 2),
            "step": self.step,
            "steps": self.total,
            "batch": self.batch,
            "batches": self.batches,
            "images": len(self.images),
            "seeds": list(self.seeds),
            "infotexts": list(self.infotexts),
            "grid": self.grid is not None,
            "error": self.error.as_dict() if self.error else None,
            "submitted": self.submitted,
            "started": self.started,
            "finished": self.finished,
            "version": self.version,
        }

    def png(self, index: int) -> bytes:
        """Image ``index`` as PNG bytes with its infotext (-1: the grid)."""
        from t2i_server.images import png_bytes

        if index not in self._png_cache:
            if index == -1:
                info = self.infotexts[0] if self.infotexts else None
                self._png_cache[index] = png_bytes(self.grid, info)
            else:
                self._png_cache[index] = png_bytes(self.images[index], self.infotexts[index])
        return self._png_cache[index]

    def touch(self) -> None:
        self.version += 1


class Worker:
    """The queue and the one thread that runs it (start with :meth:`start`)."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self._queue: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self.current: Job | None = None
        self._thread: threading.Thread | None = None
        self._stop = False
        self.completed = 0

    # -- the queue ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="t2i-worker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self.current is not None:
            self.current.interrupted = True
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, job: Job) -> Job:
        with self._cond:
            self._jobs[job.id] = job
            self._queue.append(job)
            self._trim()
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._cond:
            return list(self._jobs.values())

    def pending(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._queue) + (1 if self.current is not None else 0)

    def cancel(self, job_id: str) -> Job | None:
        """Drop a queued job or stop a running one; None if there is no such job."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.status == QUEUED and job in self._queue:
                self._queue.remove(job)
                self._finish(job, CANCELLED)
            elif job.status == RUNNING:
                job.interrupted = True
                job.touch()
        return job

    def interrupt(self) -> None:
        """Stop the running job (the web UI's Interrupt); the queue goes on."""
        job = self.current
        if job is not None:
            job.interrupted = True
            job.touch()

    def skip(self) -> None:
        """Stop the running job's current batch; its next batch runs (the web UI's Skip)."""
        job = self.current
        if job is not None:
            job.skipped = True
            job.touch()

    def _trim(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in FINISHED]
        for job in finished[: max(0, len(finished) - HISTORY)]:
            del self._jobs[job.id]

    def _finish(self, job: Job, status: str) -> None:
        job.status = status
        job.finished = time.time()
        job.touch()
        job.done.set()

    # -- running -----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job = self._queue.popleft()
                self.current = job
                job.status = RUNNING
                job.started = time.time()
                job.touch()
            try:
                self._run(job)
            except Exception as exc:  # the worker outlives every job
                job.error = _job_error(exc)
                if job.error.status >= 500:
                    log.exception("job_failed", job=job.id)
            finally:
                with self._cond:
                    self.current = None
                    status = ERROR if job.error else CANCELLED if job.interrupted else DONE
                    self._finish(job, status)
                    self.completed += 1
                log.info(
                    "job",
                    job=job.id,
                    status=job.status,
                    model=job.model_name,
                    images=len(job.images),
                    seconds=round((job.finished or 0) - (job.started or 0), 3),
                )

    def _run(self, job: Job) -> None:
        pipe = self.cache.get(job.model, job.build)
        if job.mode == "load":  # load the weights now, as the web UI's model switch does
            job.metadata["parameter_count"] = pipe.parameter_count()
            return
        several = job.mode == "xyz" and any(
            a.split("=")[0].strip().lower() in ("recipe", "checkpoint", "model") for a in job.axes
        )
        hooks = self._hooks(job, None if several else pipe)  # cells of other models: no decode
        if job.mode == "xyz":
            self._run_xyz(job, pipe, hooks)
        elif job.mode == "matrix":
            self._run_matrix(job, pipe, hooks)
        else:
            self._run_batches(job, pipe, hooks)

    def _hooks(self, job: Job, pipe: Any) -> dict[str, Callable]:
        def check() -> None:
            if job.interrupted or job.skipped:
                raise Cancelled("interrupted" if job.interrupted else "skipped")

        def on_node(node: str, node_type: str, event: str) -> None:
            check()

        def progress(node: str, step: int, total: int) -> None:
            job.node, job.step, job.total = node, step, total
            job.touch()
            check()

        last = {"decoded": 0.0}

        def preview(node: str, step: int, total: int, x0: Any) -> None:
            job.preview = x0[:1].detach().to("cpu", copy=True)
            job.preview_step = step
            now = time.monotonic()
            if pipe is not None and now - last["decoded"] >= PREVIEW_DECODE_EVERY:
                last["decoded"] = now
                job.preview_image = decoded_preview(pipe, node, x0[:1])

        return {"on_node": on_node, "progress": progress, "preview": preview}

    def _run_batches(self, job: Job, pipe: Any, hooks: dict) -> None:
        request = pipe.make_request(job.prompt, **job.fields)  # every check, before any work
        base = request.resolved_seed()
        job.batches = request.batch_count
        variation = request.subseed_strength > 0
        sub = request.resolved_subseed() if variation else None
        for b in range(request.batch_count):
            if job.interrupted:
                break
            job.batch, job.step, job.skipped = b, 0, False
            job.touch()
            fields = {**job.fields, **_batch_seeds(base, sub, b * request.batch_size)}
            try:
                result = pipe(job.prompt, **fields, **hooks)
            except Cancelled:
                if job.interrupted:
                    break
                continue  # skipped: the next batch
            self._collect(job, result)
            if variation:
                job.subseeds += [
                    (fields["subseed"] + i) % SEED_RANGE for i in range(len(result.images))
                ]
        job.metadata.setdefault("seed", base)

    def _collect(self, job: Job, result: Any) -> None:
        job.images += result.images
        job.seeds += result.seeds
        job.prompts += result.prompts
        job.infotexts += result.infotexts
        job.metadata = {**result.metadata, "seed": job.metadata.get("seed", result.seeds[0])}
        job.touch()

    def _run_xyz(self, job: Job, pipe: Any, hooks: dict) -> None:
        from t2i.xyz import Axis, xyz_plot

        axes = [Axis.parse(a) if isinstance(a, str) else a for a in job.axes]
        job.batches = 1
        for axis in axes:
            job.batches *= len(axis.values)

        def on_cell(i: int, total: int, result: Any) -> None:
            job.batch = i
            job.touch()

        plot = xyz_plot(
            pipe,
            job.prompt,
            axes,
            pipeline_for=self._pipeline_for(job, pipe),
            progress=hooks["progress"],
            on_cell=on_cell,
            **job.fields,
        )
        self._collect(job, plot.result)
        job.grid = plot.grid

    def _pipeline_for(self, job: Job, pipe: Any) -> Callable[[str, str], Any]:
        from t2i.engine import Engine
        from t2i_server.cache import model_key

        def pipeline_for(kind: str, value: str) -> Any:
            recipe = value if kind == "recipe" else pipe.recipe.name
            if kind in ("vae", "checkpoint"):  # the job's own options (a VAE, ControlNets,
                options = {**job_options(job), kind: value}  # folders) with each file
            else:
                options = {}
            key = model_key(recipe, options)
            return self.cache.get(
                key,
                lambda: Engine.build(
                    recipe, plugins=pipe.manager, device=pipe.device, dtype=pipe.dtype, **options
                ),
            )

        return pipeline_for

    def _run_matrix(self, job: Job, pipe: Any, hooks: dict) -> None:
        from t2i.matrix import prompt_matrix_grid

        grid, result = prompt_matrix_grid(
            pipe, job.prompt, progress=hooks["progress"], **job.fields
        )
        self._collect(job, result)
        job.grid = grid


def decoded_preview(pipe: Any, sampling_node: str, x0: Any) -> Any:
    """``x0`` (a sampling node's preview value) decoded by the decoder that decodes
    ``sampling_node``'s samples in the pipeline's graph (a PIL image): its
    ``decode_preview`` when it has one (a token decoder's partial grids), else ``decode``;
    None when the graph has no such decoder or it fails (the cheap preview is shown then).
    Runs on the worker thread, between sampler steps."""
    from t2i.payloads import Latent

    graph = pipe.recipe.graph
    decode = next(
        (
            n
            for n in graph
            if n.type == "Decode"
            and "samples" in n.inputs
            and n.inputs["samples"].node == sampling_node
            and "decoder" in n.inputs
        ),
        None,
    )
    if decode is None:
        return None
    loader = decode.inputs["decoder"].node
    try:
        import torch

        decoder = pipe.executor.run(graph, outputs=[loader])[loader]["decoder"]
        decode = getattr(decoder, "decode_preview", None) or decoder.decode
        with torch.inference_mode():
            return decode(Latent(x0.detach())).to_pil()[0]
    except Exception:  # a preview never fails a job
        log.debug("preview_decode_failed", node=sampling_node, exc_info=True)
        return None


def _job_error(exc: Exception) -> JobError:
    """The HTTP view of a failure: 422 for bad input (naming the field), 500 otherwise."""
    from t2i.graph.errors import GraphValidationError, NodeExecutionError
    from t2i.registry.errors import UnknownComponentError
    from t2i.request import RequestError

    input_errors: tuple[type[Exception], ...] = (
        RequestError,
        UnknownComponentError,
        GraphValidationError,
    )
    try:
        from t2i.checkpoints import CheckpointError
        from t2i.engine import EngineError

        input_errors += (EngineError, CheckpointError)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, NodeExecutionError) and isinstance(exc.error, (*input_errors, ValueError)):
        exc = exc.error
    if isinstance(exc, RequestError):
        return JobError(422, str(exc), exc.field)
    if isinstance(exc, input_errors):
        return JobError(422, str(exc), None, type(exc).__name__)
    return JobError(500, f"{type(exc).__name__}: {exc}", None, type(exc).__name__)


def _batch_seeds(seed: int, subseed: int | None, offset: int) -> dict[str, int]:
    """The fields of one batch of a run split into ``batch_count`` calls, by the web UI's rule:
    image ``k`` of the run has seed ``seed + k``, or, with variation seeds (``subseed`` given),
    seed ``seed`` for every image and variation seed ``subseed + k``."""
    if subseed is None:
        return {"seed": (seed + offset) % SEED_RANGE, "batch_count": 1}
    return {"seed": seed, "subseed": (subseed + offset) % SEED_RANGE, "batch_count": 1}


def job_options(job: Job) -> dict[str, Any]:
    """The recipe options of a recipe job's model (its cache key's JSON); a graph's: none."""
    import json

    return json.loads(job.model[2]) if job.model and job.model[0] == "recipe" else {}
