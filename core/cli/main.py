"""The ``t2i`` command line. Exit codes: 0 success, 1 failure, 2 usage error."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import click

from t2i.kinds import KINDS
from t2i.logs import configure_logging

GC_THRESHOLD = (50_000, 10, 10)
"""The command's process collects young objects every 50,000 allocations, not 700: start-up
(torch's import, building modules) creates a few hundred thousand long-lived objects, which
the default thresholds scan in three full collections, about 0.2 s (issue 23.5); tensors are
freed by reference counting either way. Only the command's own process: importing t2i as a
library changes nothing."""
gc.set_threshold(*GC_THRESHOLD)

DEFAULT_RECIPE_ENV = "T2I_DEFAULT_RECIPE"
"""Names the recipe ``t2i generate`` runs without ``--recipe`` (else: a recipe a plugin
registered with ``default=True``, the first plugin in load order winning)."""


def _manager():
    from t2i.plugins import get_plugin_manager

    return get_plugin_manager()


class T2IGroup(click.Group):
    """Maps t2i's own input errors to exit code 2 with a one-line message.

    Input errors are the documented error types of each layer (:meth:`input_errors`), also
    when a node raised one (or a ``ValueError``, a node's "invalid value") while running.
    """

    @staticmethod
    def input_errors() -> tuple[type[Exception], ...]:
        """The documented error types of bad input: each maps to exit code 2.

        A layer's error type is only looked up when its module is loaded (an error of a
        module never imported cannot have been raised), so a usage error imports no torch.
        """
        from t2i.graph.errors import GraphValidationError
        from t2i.registry.errors import UnknownComponentError
        from t2i.request import RequestError

        errors: list[type[Exception]] = [RequestError, UnknownComponentError, GraphValidationError]
        for module, name in (("t2i.engine", "EngineError"), ("t2i.checkpoints", "CheckpointError")):
            if module in sys.modules:
                errors.append(getattr(sys.modules[module], name))
        return tuple(errors)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except KeyboardInterrupt as exc:
            _report(ctx, f"interrupted: {exc}" if str(exc) else "interrupted", 130)
        except Exception as exc:
            _report(ctx, *self._classify(exc))

    def _classify(self, exc: Exception) -> tuple[str, int]:
        """The message and exit code of a failure: 2 for bad input, else 1."""
        from t2i.graph.errors import NodeExecutionError

        inputs = self.input_errors()
        if isinstance(exc, inputs):
            return f"error: {exc}", 2
        if isinstance(exc, NodeExecutionError):
            return f"error: {exc}", 2 if isinstance(exc.error, (*inputs, ValueError)) else 1
        return f"error: {type(exc).__name__}: {exc}", 1


GLOBAL_OPTIONS = ("--log-format", "--log-level")
"""Options of the ``t2i`` group that are accepted after the subcommand too."""


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with :data:`GLOBAL_OPTIONS` (and their values) moved in front, so
    ``t2i generate ... --log-format json`` means ``t2i --log-format json generate ...``;
    nothing after ``--`` moves."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            takes = 1 if "=" in arg or i + 1 == len(args) else 2
            front.extend(args[i : i + takes])
            i += takes
            continue
        rest.append(arg)
        i += 1
    return front + rest


def _report(ctx: click.Context, message: str, code: int) -> None:
    """Print ``message`` on stderr (a JSON log line under ``--log-format json``) and exit."""
    if ctx.meta.get("t2i.log_format") == "json":
        import structlog

        structlog.get_logger("t2i.cli").error("command_failed", message=message, exit_code=code)
    else:
        click.echo(message, err=True)
    ctx.exit(code)


@click.group(cls=T2IGroup)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    help="Log line format on stderr.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning"
)
@click.version_option(package_name="t2i")
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str) -> None:
    """t2i: a plugin-based text-to-image engine."""
    ctx.meta["t2i.log_format"] = log_format
    configure_logging(log_level, log_format)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List plugins: name, version, load status, components and errors."""
    records = list(_manager().records.values())
    if as_json:
        import attrs

        click.echo(json.dumps([attrs.asdict(r) for r in records], indent=2, default=str))
        return
    for r in records:
        click.echo(
            f"{r.name:<24} {r.version or '-':<10} {r.status:<9} "
            f"{len(r.components):>3} components  {r.source}"
        )
        if r.error:
            click.echo(f"    error: {r.error}")


@cli.command()
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=None,
)
def components(kind: str | None) -> None:
    """List registered components (all kinds, or one)."""
    for e in _manager().registry.entries(kind):
        aliases = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
        click.echo(f"{e.kind:<13} {e.name:<28} {e.plugin:<16} {e.description}{aliases}")


@cli.command()
def recipes() -> None:
    """List recipes (what --recipe and Engine.build accept)."""
    for e in _manager().registry.entries("recipe"):
        aliases = f" (aliases: {', '.join(e.aliases)})" if e.aliases else ""
        mark = " [default]" if e.default else ""
        click.echo(f"{e.name:<24} {e.plugin:<16} {e.description}{aliases}{mark}")


@cli.group()
def graph() -> None:
    """Inspect recipe graphs."""


def parse_options(pairs: tuple[str, ...]) -> dict[str, object]:
    """``KEY=VALUE`` pairs (``--option``) -> a dict; values are read as JSON where they parse
    (2, true). Public: plugin commands that take recipe options use it too."""
    options: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--option {pair!r}: write KEY=VALUE (e.g. clip_skip=2)")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def _recipe_options(command):
    """``--checkpoint`` and ``--option KEY=VALUE`` (any option of the recipe's factory)."""
    command = click.option(
        "--option",
        "recipe_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="A recipe option, e.g. --option clip_skip=2 (repeatable).",
    )(command)
    command = click.option(
        "--allow-pickle",
        is_flag=True,
        help="Load a pickle checkpoint (.ckpt/.pt) you trust; still torch.load(weights_only=True).",
    )(command)
    return click.option(
        "--checkpoint", default=None, help="Checkpoint file or folder for the recipe."
    )(command)


def _build_options(
    checkpoint: str | None, recipe_options: tuple[str, ...], allow_pickle: bool = False
) -> dict[str, object]:
    options = parse_options(recipe_options)
    if checkpoint:
        options["checkpoint"] = checkpoint
    if allow_pickle:
        options["allow_pickle"] = True
    return options


@graph.command("show")
@click.argument("recipe")
@click.option("--format", "fmt", type=click.Choice(["text", "mermaid", "json"]), default="text")
@click.option("--img2img", is_flag=True, help="Show the img2img graph.")
@_recipe_options
def graph_show(
    recipe: str,
    fmt: str,
    img2img: bool,
    checkpoint: str | None,
    recipe_options: tuple[str, ...],
    allow_pickle: bool,
) -> None:
    """Print the graph of RECIPE; ``--format json`` writes what ``t2i run`` runs."""
    from t2i.engine import Engine

    pipe = Engine.build(recipe, **_build_options(checkpoint, recipe_options, allow_pickle))
    g = pipe.recipe.img2img_graph if img2img else pipe.graph
    if g is None:
        raise click.UsageError(f"recipe {recipe!r} has no img2img graph")
    if fmt == "json":
        click.echo(json.dumps(pipe.recipe.graph_dict(img2img=img2img), indent=2))
        return
    click.echo({"text": g.render_text, "mermaid": g.render_mermaid}[fmt]())


def _progress():
    """A tqdm bar per node that reports steps on a terminal; else a plain line per node at
    every 25% (logs and CI output stay readable)."""
    if not sys.stderr.isatty():
        return _plain_progress()
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def on_step(node: str, step: int, total: int) -> None:
        bar = bars.get(node)
        if bar is None or bar.total != total or step < bar.n:
            if bar is not None:
                bar.close()
            bar = bars[node] = tqdm(
                total=total, desc=node, unit="step", file=sys.stderr, leave=False, disable=None
            )
        bar.update(step - bar.n)
        if step >= total:
            bar.close()

    return on_step


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None):
    """``WxH`` -> ``(w, h)`` (a click callback); None stays None."""
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise click.BadParameter(f"give WIDTHxHEIGHT such as 512x768, got {value!r}")
    return int(w), int(h)


def _request_options(command):
    """The request fields both ``generate`` and ``run`` take, and where images go."""
    options = [
        click.option(
            "-o",
            "--output",
            type=click.Path(),
            default="t2i.png",
            show_default=True,
            help="A .png/.jpg/.webp file (numbered when several or when it exists) or a "
            "folder (numbering continues).",
        ),
        click.option(
            "--overwrite",
            is_flag=True,
            help="Replace an existing output file (default: new number).",
        ),
        click.option("--negative", "negative_prompt", default=None, help="Negative prompt."),
        click.option("--steps", type=int, default=None),
        click.option("--cfg", "cfg_scale", type=float, default=None, help="Guidance scale."),
        click.option("--sampler", default=None, help="Sampler, e.g. euler, 'DPM++ 2M Karras'."),
        click.option(
            "--schedule", default=None, help="Schedule type, e.g. karras (default: Automatic)."
        ),
        click.option("--guidance", default=None, help="Guidance: cfg, dynamic, rescale, none ..."),
        click.option("--seed", type=int, default=None, help="-1 for random."),
        click.option(
            "--subseed", type=int, default=None, help="Variation seed (A1111; -1 for random)."
        ),
        click.option(
            "--subseed-strength",
            type=float,
            default=None,
            help="Variation strength in [0, 1]: slerp toward the variation seed's noise.",
        ),
        click.option(
            "--seed-resize-from",
            callback=_parse_size,
            default=None,
            metavar="WxH",
            help="Draw the seed's noise at this size, centred (A1111's resize seed from).",
        ),
        click.option("--width", type=int, default=None),
        click.option("--height", type=int, default=None),
        click.option("--batch-size", type=int, default=None),
        click.option("--batch-count", type=int, default=None),
        click.option(
            "--init-image",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="img2img: start from this image.",
        ),
        click.option("--strength", type=float, default=None, help="img2img denoising strength."),
        *_INPAINT_OPTIONS,
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ..."),
        click.option(
            "--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


_INPAINT_OPTIONS = (
    click.option(
        "--mask",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Inpaint: repaint the white of this mask (the init image's size).",
    ),
    click.option("--mask-blur", type=int, default=None, help="Mask blur in pixels (4)."),
    click.option(
        "--inpaint-not-masked",
        "inpainting_mask_invert",
        is_flag=True,
        default=None,
        help="Repaint what the mask leaves black.",
    ),
    click.option(
        "--masked-content",
        "inpainting_fill",
        type=click.Choice(["fill", "original", "latent noise", "latent nothing"]),
        default=None,
        help="What the masked area starts from (original).",
    ),
    click.option(
        "--only-masked",
        "inpaint_full_res",
        is_flag=True,
        default=None,
        help="Inpaint the masked area's box at the request's size, pasted back.",
    ),
    click.option(
        "--only-masked-padding",
        "inpaint_full_res_padding",
        type=int,
        default=None,
        help="Pixels around the masked area for --only-masked (32).",
    ),
)
"""A1111's inpainting controls (request fields ``mask``, ``mask_blur`` ...)."""


def _with_init_image(fields: dict) -> dict:
    """``fields`` with ``init_image`` (a path) decoded (a file that is not an image is a
    :class:`~t2i.request.RequestError` naming it, exit 2) and ``seed_resize_from`` split into
    ``seed_resize_from_w`` / ``_h``."""
    size = fields.pop("seed_resize_from", None)
    if size is not None:
        fields["seed_resize_from_w"], fields["seed_resize_from_h"] = size
    if fields.get("init_image") is not None:
        from t2i.request import decode_init_image

        fields["init_image"] = decode_init_image(fields["init_image"])
    return fields


def _generate_and_save(pipe, prompt, fields, output: str, overwrite: bool) -> None:
    """Run the request and save each batch as it finishes, so an interrupt keeps them."""
    fields = _with_init_image({k: v for k, v in fields.items() if v is not None})

    def save(batch) -> None:
        for path in batch.save(output, overwrite=overwrite):
            click.echo(str(path))

    pipe(prompt, progress=_progress(), on_batch=save, **fields)


def _plain_progress():
    shown: dict[str, int] = {}

    def on_step(node: str, step: int, total: int) -> None:
        quarter = 4 * step // max(total, 1)
        if step == 1 or quarter > shown.get(node, 0):
            shown[node] = quarter
            click.echo(f"{node}: step {step}/{total}", err=True)

    return on_step


@cli.command()
@click.argument("graph_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--prompt", default=None, help="Prompt, if the graph binds one.")
@_request_options
def run(graph_file: str, prompt: str | None, device, dtype, output, overwrite, **fields) -> None:
    """Run a graph JSON file (from ``t2i graph show --format json``) and save its images."""
    from t2i.engine import Engine, EngineError
    from t2i.graph.errors import GraphValidationError

    try:
        pipe = Engine.from_graph(graph_file, device=device, dtype=dtype)
    except GraphValidationError as exc:  # every error in the file names the file
        raise exc.located(graph_file) from exc
    except EngineError as exc:
        raise EngineError(f"{graph_file}: {exc}") from exc
    _generate_and_save(pipe, prompt, fields, output, overwrite)


def _default_recipe() -> str:
    import os

    reg = _manager().registry
    chosen = os.environ.get(DEFAULT_RECIPE_ENV)
    if chosen:
        return reg.get("recipe", chosen).name
    order = list(_manager().records)
    defaults = [e for e in reg.entries("recipe") if e.default]
    defaults.sort(key=lambda e: order.index(e.plugin) if e.plugin in order else len(order))
    if defaults:
        return defaults[0].name
    raise click.UsageError(
        "no default recipe is installed: install a family plugin that ships an embedded "
        "model (pip install -e plugins/t2i_ldm), pass --recipe NAME (see `t2i recipes`) "
        f"or set {DEFAULT_RECIPE_ENV}"
    )


@cli.command()
@click.argument("prompt")
@click.option("--recipe", default=None, help="Recipe name (default: the embedded default model).")
@_recipe_options
@click.option("--prompt-matrix", is_flag=True, help="Render every combination of a|b|c parts.")
@click.option(
    "--xyz",
    "xyz_axes",
    multiple=True,
    metavar="FIELD=VALUES",
    help="X/Y/Z plot axis (up to 3, X first), e.g. --xyz 'cfg_scale=3-7 (+2)' "
    "--xyz 'sampler=Euler,DPM++ 2M'; fields: seed, steps, cfg_scale, sampler, schedule, "
    "size (64x64), strength, recipe, checkpoint, prompt_sr (search first).",
)
@click.option(
    "--embeddings-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Textual-inversion embeddings (.safetensors / .pt): a prompt uses one by file name.",
)
@click.option(
    "--runtime",
    default=None,
    help="Inference runtime: torch (default) or onnx (with --onnx-dir, plugin t2i_onnx).",
)
@click.option(
    "--onnx-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="A `t2i export onnx` folder (implies --runtime onnx; its recipe is the default).",
)
@click.option(
    "--compile",
    "compile_models",
    is_flag=True,
    help="Fast path: torch.compile the denoiser and decoder (on CUDA also channels-last, "
    "TF32, CUDA graphs); the first image pays the compilation, cached for later runs.",
)
@click.option(
    "--fp8",
    "fp8",
    is_flag=True,
    help="FP8 (E4M3) weights and matmuls in the denoiser's linear layers (lossy, opt-in; "
    "Ada / Hopper GPUs or the CPU); combines with --compile.",
)
@_request_options
def generate(
    prompt: str,
    output: str,
    recipe: str | None,
    runtime: str | None,
    onnx_dir: str | None,
    compile_models: bool,
    fp8: bool,
    embeddings_dir: str | None,
    checkpoint: str | None,
    recipe_options: tuple[str, ...],
    allow_pickle: bool,
    prompt_matrix: bool,
    xyz_axes: tuple[str, ...],
    device: str | None,
    dtype: str | None,
    overwrite: bool,
    **fields,
) -> None:
    """Generate images for PROMPT and write files carrying their parameters."""
    from t2i.engine import Engine

    build = _build_options(checkpoint, recipe_options, allow_pickle)
    if embeddings_dir is not None:
        build["embeddings_dir"] = embeddings_dir
    if onnx_dir is not None:
        runtime = runtime or "onnx"
        build[f"{runtime}_dir"] = onnx_dir
    if runtime in (None, "torch"):
        recipe = recipe or _default_recipe()
    else:
        build["runtime"] = runtime
    if compile_models:
        build["compile"] = True
    if fp8:
        build["fp8"] = True
    pipe = Engine.build(recipe, device=device, dtype=dtype, **build)
    if prompt_matrix and xyz_axes:
        raise click.UsageError("--prompt-matrix and --xyz: give one of them")
    if not prompt_matrix and not xyz_axes:
        _generate_and_save(pipe, prompt, fields, output, overwrite)
        return
    from t2i.outputs import save_images

    fields = _with_init_image({k: v for k, v in fields.items() if v is not None})
    if xyz_axes:
        from t2i.xyz import xyz_plot

        def pipeline_for(kind: str, value: str):
            if kind == "recipe":
                return Engine.build(value, device=device, dtype=dtype)
            return Engine.build(recipe, device=device, dtype=dtype, **{**build, kind: value})

        plot = xyz_plot(
            pipe, prompt, xyz_axes, pipeline_for=pipeline_for, progress=_progress(), **fields
        )
        grid, result = plot.grid, plot.result
    else:
        from t2i.matrix import prompt_matrix_grid

        grid, result = prompt_matrix_grid(pipe, prompt, progress=_progress(), **fields)
    paths = result.save(output, overwrite=overwrite)
    grid_target = _grid_path(Path(output))
    paths += save_images(
        [grid], result.infotexts[:1], result.seeds[:1], grid_target, overwrite=overwrite
    )
    for path in paths:
        click.echo(str(path))


def _grid_path(output: Path) -> Path:
    """Where a prompt-matrix grid goes: ``NAME-grid.EXT`` beside a file, else ``grid.png``."""
    from t2i.outputs import FORMATS

    if output.suffix.lower() in FORMATS:
        return output.with_name(f"{output.stem}-grid{output.suffix}")
    return output / "grid.png"


def _mount_commands() -> None:
    """The shapes benchmark's commands (``eval``, ``compare``), ``t2i train`` and every
    plugin's commands."""
    from t2i.cli.compare import compare_command
    from t2i.cli.shapes import data, eval_command
    from t2i.training.cli import train_group

    cli.add_command(data)
    cli.add_command(eval_command, "eval")
    cli.add_command(compare_command, "compare")
    cli.add_command(train_group(_manager))
    _manager().register_commands(cli)


_mount_commands()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="t2i", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
