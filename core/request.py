"""Generation requests: attrs classes validated before any model work.

:class:`GenerationRequest` checks each field on its own (type, range, encodable text); the
``check_*`` functions check what depends on the pipeline's graph (bound node parameters,
component names and options, guidance and sampler options) and :func:`decode_init_image`
decodes an init image, so that a request that passes never fails inside a node for its input.
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable, Mapping
from typing import Any

import attrs

MAX_PROMPT_CHARS = 100_000
"""Longest prompt accepted (tokenizers chunk long prompts; this bounds the work)."""
NOISE_DEVICES = ("cpu", "device")
"""As :data:`t2i.noise.NOISE_DEVICES` (not imported: requests are made without torch)."""


class RequestError(ValueError):
    """A request field has a bad value; the message names the field and what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def _check(cond: bool, field: str, message: str) -> None:
    if not cond:
        raise RequestError(field, message)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_range(lo: int, hi: int | None = None):
    def validator(_inst, attribute, value):
        _check(
            isinstance(value, int) and not isinstance(value, bool),
            attribute.name,
            f"must be an integer, got {_short(value)}",
        )
        _check(
            value >= lo and (hi is None or value <= hi),
            attribute.name,
            f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}",
        )

    return validator


def _float_range(lo: float, hi: float | None = None, *, optional: bool = False):
    def validator(_inst, attribute, value):
        if optional and value is None:
            return
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            attribute.name,
            f"must be a number, got {_short(value)}",
        )
        _check(
            value >= lo and (hi is None or value <= hi),
            attribute.name,
            f"must be in [{lo}, {hi if hi is not None else 'inf'}], got {value}",
        )

    return validator


def check_text(field: str, value: Any) -> None:
    """A string that UTF-8 can encode (no lone surrogate), at most :data:`MAX_PROMPT_CHARS`."""
    _check(isinstance(value, str), field, f"must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(
            field,
            f"is not encodable text: lone surrogate {value[exc.start]!r} at index {exc.start}; "
            "remove it (text must be valid Unicode)",
        ) from None
    _check(
        len(value) <= MAX_PROMPT_CHARS,
        field,
        f"is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}",
    )


def _str(_inst, attribute, value):
    check_text(attribute.name, value)


def _name(*, optional: bool = False):
    """A component name: a non-empty string (or None, when ``optional``: automatic)."""

    def validator(_inst, attribute, value):
        if optional and value is None:
            return
        check_text(attribute.name, value)
        _check(bool(value.strip()), attribute.name, f"must name a registered {attribute.name}")

    return validator


def _choice(choices: tuple[str, ...]):
    def validator(_inst, attribute, value):
        _check(
            isinstance(value, str) and value in choices,
            attribute.name,
            f"must be one of {', '.join(choices)}, got {_short(value)}",
        )

    return validator


def _image_or_path(_inst, attribute, value):
    from PIL import Image as PILImage

    _check(
        value is None or isinstance(value, (PILImage.Image, str, os.PathLike)),
        attribute.name,
        f"must be a PIL image or an image file path, got {type(value).__name__}",
    )


INPAINT_FILLS = ("fill", "original", "latent noise", "latent nothing")
"""A1111's "Masked content" (``inpainting_fill`` 0-3), as :data:`t2i.masking.FILL_MODES`."""


def _fill_index(value: Any) -> Any:
    """``inpainting_fill`` by name ("latent noise") -> its index; anything else unchanged."""
    if isinstance(value, str) and value.strip().lower() in INPAINT_FILLS:
        return INPAINT_FILLS.index(value.strip().lower())
    return value


def _bool(_inst, attribute, value):
    _check(isinstance(value, bool), attribute.name, f"must be true or false, got {_short(value)}")


@attrs.frozen
class GenerationRequest:
    """One call of a pipeline. Fields a recipe does not bind are rejected by the pipeline.

    ``seed=-1`` draws a random seed; image ``i`` of a batch uses ``seed + i`` and
    batch ``b`` of ``batch_count`` starts at ``seed + b * batch_size`` (the web UIs' rule).
    Variation seeds (A1111): with ``subseed_strength > 0`` every image keeps ``seed`` and
    image ``k`` of the whole run uses variation seed ``subseed + k`` (-1: random);
    ``seed_resize_from_w/h`` (pixels; <= 0 off) draw the seed noise at that size.
    Inpainting (A1111's img2img fields): ``mask`` (the init image's size; white = repaint, or
    an RGBA image's painted alpha), ``mask_blur``, ``inpainting_mask_invert`` (1: inpaint
    the unmasked area), ``inpainting_fill`` (0 fill, 1 original, 2 latent noise, 3 latent
    nothing; or the name), ``inpaint_full_res`` ("only masked") with
    ``inpaint_full_res_padding``.
    """

    prompt: str = attrs.field(default="", validator=_str)
    negative_prompt: str = attrs.field(default="", validator=_str)
    steps: int = attrs.field(default=20, validator=_int_range(1, 1000))
    cfg_scale: float = attrs.field(default=7.0, validator=_float_range(0.0, 100.0))
    sampler: str = attrs.field(default="euler", validator=_name())
    schedule: str | None = attrs.field(  # "" as None: the sampler's own (automatic)
        default=None, converter=lambda v: None if v == "" else v, validator=_name(optional=True)
    )
    guidance: str = attrs.field(default="cfg", validator=_name())
    seed: int = attrs.field(default=-1, validator=_int_range(-1, 2**32 - 1))
    width: int = attrs.field(default=512, validator=_int_range(8, 8192))
    height: int = attrs.field(default=512, validator=_int_range(8, 8192))
    batch_size: int = attrs.field(default=1, validator=_int_range(1, 256))
    batch_count: int = attrs.field(default=1, validator=_int_range(1, 10_000))
    strength: float = attrs.field(default=0.75, validator=_float_range(0.0, 1.0))
    init_image: Any = attrs.field(default=None, validator=_image_or_path)
    eta: float | None = attrs.field(default=None, validator=_float_range(0.0, optional=True))
    noise_device: str = attrs.field(default="cpu", validator=_choice(NOISE_DEVICES))
    subseed: int = attrs.field(default=-1, validator=_int_range(-1, 2**32 - 1))
    subseed_strength: float = attrs.field(default=0.0, validator=_float_range(0.0, 1.0))
    seed_resize_from_w: int = attrs.field(default=0, validator=_int_range(-1, 8192))
    seed_resize_from_h: int = attrs.field(default=0, validator=_int_range(-1, 8192))
    mask: Any = attrs.field(default=None, validator=_image_or_path)
    mask_blur: int = attrs.field(default=4, validator=_int_range(0, 256))
    inpainting_mask_invert: int = attrs.field(
        default=0,
        converter=lambda v: int(v) if isinstance(v, bool) else v,
        validator=_int_range(0, 1),
    )
    inpainting_fill: int = attrs.field(
        default=1, converter=_fill_index, validator=_int_range(0, len(INPAINT_FILLS) - 1)
    )
    inpaint_full_res: bool = attrs.field(default=False, validator=_bool)
    inpaint_full_res_padding: int = attrs.field(default=32, validator=_int_range(0, 8192))
    extra: dict[str, Any] = attrs.Factory(dict)

    def resolved_seed(self) -> int:
        """The seed actually used: ``seed``, or a fresh random one for -1 (as A1111)."""
        return self.seed if self.seed != -1 else random.randrange(4294967294)

    def resolved_subseed(self) -> int:
        """The variation seed actually used: ``subseed``, or a random one for -1."""
        return self.subseed if self.subseed != -1 else random.randrange(4294967294)

    @property
    def uses_variation(self) -> bool:
        """Variation seeds or a seed resize are on (A1111: strength > 0, both sizes > 0)."""
        return self.subseed_strength > 0 or self.seed_resize_from is not None

    @property
    def seed_resize_from(self) -> tuple[int, int] | None:
        """``(w, h)`` of "Resize seed from", or None when either is <= 0 (off)."""
        w, h = self.seed_resize_from_w, self.seed_resize_from_h
        return (w, h) if w > 0 and h > 0 else None


REQUEST_FIELDS: tuple[str, ...] = tuple(
    f.name for f in attrs.fields(GenerationRequest) if f.name != "extra"
)


_IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError)
"""What Pillow raises on a file it cannot decode (``UnidentifiedImageError`` is an OSError)."""


def _decoded(field: str, value: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert`` of the image ``value`` (a ``PIL.Image`` or a file path, opened and read
    now); Pillow's decoding errors become a RequestError naming ``field`` and the fix."""
    from PIL import Image as PILImage

    try:
        image = PILImage.open(value) if isinstance(value, (str, os.PathLike)) else value
        image.load()
        return convert(image)
    except PILImage.DecompressionBombError as exc:
        raise RequestError(field, f"is too large to decode safely ({exc})") from None
    except _IMAGE_ERRORS as exc:
        where = f"{os.fspath(value)}: " if isinstance(value, (str, os.PathLike)) else ""
        raise RequestError(
            field,
            f"{where}cannot be decoded as an image ({type(exc).__name__}: {exc}); "
            "give a PNG, JPEG or WebP file",
        ) from None


def _binary_mask(image: Any) -> Any:
    """A1111's ``create_binary_mask``: an RGBA image with transparency gives its alpha,
    thresholded at 128; anything else its ``L`` conversion."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.split()[-1].point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


def decode_init_image(value: Any) -> Any:
    """The init image as a decoded RGB ``PIL.Image``; a file path is opened and read now.

    Raises:
        RequestError: (``init_image``) not an image, unreadable, undecodable, or in a mode
            that has no RGB conversion.
    """
    rgb = _decoded("init_image", value, lambda image: image.convert("RGB"))
    _check(min(rgb.size) >= 1, "init_image", f"has no pixels (size {rgb.size})")
    return rgb


def decode_mask(value: Any, init_image: Any) -> Any:
    """The inpainting mask as an ``L`` image of 0 / 255 (A1111's ``create_binary_mask``: an
    RGBA image with transparency gives its alpha, thresholded), checked against the decoded
    init image's size.

    Raises:
        RequestError: (``mask``) undecodable, no init image, or another size than it.
    """
    _check(init_image is not None, "mask", "inpainting needs an init image: give init_image")
    mask = _decoded("mask", value, _binary_mask)
    w, h = mask.size
    iw, ih = init_image.size
    _check(
        (w, h) == (iw, ih),
        "mask",
        f"is {w}x{h} but the init image is {iw}x{ih}; give a mask of the init image's size "
        f"(resize it to {iw}x{ih}: white = repaint, black = keep)",
    )
    return mask


def options_problem(factory: Callable[..., Any], options: Any) -> str | None:
    """Why ``factory(**options)`` would be refused by its signature (or None if it binds).

    Only the signature is checked (unknown or missing keywords); nothing is called.
    """
    if not isinstance(options, Mapping):
        return f"options must be a dict, got {type(options).__name__}"
    bad = [k for k in options if not isinstance(k, str)]
    if bad:
        return f"option names must be strings, got {_short(bad[0])}"
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let it decide
        return None
    try:
        signature.bind(**options)
    except TypeError as exc:
        names = [
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        return f"{exc}; it takes {', '.join(names) or 'no options'}"
    return None


def check_bound_values(
    values: Mapping[str, Any],
    bindings: Mapping[str, Any],
    graph: Any,
    node_types: Any,
) -> None:
    """Each request value suits every node parameter it is bound to (type, choices).

    Raises:
        RequestError: naming the field, the node parameter and what it accepts.
        GraphValidationError: a binding names a node or parameter the graph lacks.
    """
    from t2i.graph.errors import GraphValidationError
    from t2i.graph.graph import param_problem

    for field, targets in bindings.items():
        value = values.get(field)
        if value is None:
            continue
        for node_id, name in targets:
            if node_id not in graph:
                raise GraphValidationError(f"request field {field!r} is bound to a missing node")
            node = graph[node_id]
            param = node_types.get_node_type(node.type).param(name)
            if param is None:
                raise GraphValidationError(
                    f"request field {field!r} is bound to a parameter {node.type} lacks",
                    node=node_id,
                    port=name,
                )
            problem = param_problem(param, value)
            if problem:
                raise RequestError(field, f"{problem} (for {node_id}.{name})")


def check_components(graph: Any, registry: Any, loaders: Mapping[str, str]) -> None:
    """Every component a loader node names is registered and accepts its options.

    Args:
        loaders: node type -> component kind (``{"LoadDecoder": "decoder", ...}``).

    Raises:
        UnknownComponentError: an unregistered name (close matches listed).
        GraphValidationError: a name that is not a string, or options the factory refuses.
    """
    from t2i.graph.errors import GraphValidationError

    for node in graph:
        kind = loaders.get(node.type)
        if kind is None:
            continue
        name = node.params.get("name")
        if not isinstance(name, str):
            raise GraphValidationError(
                f"a {kind} name must be a string, got {_short(name)}", node=node.id, port="name"
            )
        entry = registry.get(kind, name)
        problem = options_problem(entry.factory, node.params.get("options") or {})
        if problem:
            raise GraphValidationError(
                f"{kind} {entry.name!r} refuses its options: {problem}",
                node=node.id,
                port="options",
            )


def check_guidance_options(name: str, options: Any, scale: Any, registry: Any) -> None:
    """The guidance ``name`` accepts ``options`` and the guidance ``scale``.

    The guidance is built with its options and wraps a placeholder model at ``scale``
    (a guidance only wraps: no model runs), so its own checks (truncation's psi in [0, 1],
    thresholding percentiles ...) run now.

    Raises:
        RequestError: (``guidance_options`` or ``cfg_scale``) a keyword or value it refuses.
    """
    entry = registry.get("guidance", name)
    problem = options_problem(entry.factory, options or {})
    if problem:
        raise RequestError("guidance_options", f"guidance {entry.name!r}: {problem}")
    try:
        guidance = entry.create(**(options or {}))
    except (TypeError, ValueError) as exc:
        raise RequestError("guidance_options", f"guidance {entry.name!r}: {exc}") from None
    try:
        guidance.wrap(None, uncond=None, scale=scale)
    except ValueError as exc:
        raise RequestError("cfg_scale", f"{exc} (guidance {entry.name!r})") from None
    except (AttributeError, TypeError):  # this guidance needs the real model to check
        pass


def check_sampler_options(entry: Any, params: Mapping[str, Any], fields: Mapping[str, str]) -> None:
    """The sampler takes the sampling node's parameters that its factory names.

    A sampling node hands its sampler the parameters the sampler's factory declares (a
    token sampler's ``top_k``, ``top_p``, ``temperature``); building the sampler (cheap, no
    model) checks their values now.

    Args:
        entry: the sampler's registry entry.
        params: the node's effective parameters (without ``sampler``).
        fields: node parameter -> the request field bound to it (named in the error).

    Raises:
        RequestError: the sampler refuses a value; names the field when one is bound.
    """
    try:
        signature = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        return
    named = {
        n
        for n, p in signature.parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    options = {k: v for k, v in params.items() if k in named}
    try:
        entry.create(**options)
    except (TypeError, ValueError) as exc:
        field = next((fields[k] for k in options if k in str(exc) and k in fields), "sampler")
        raise RequestError(field, f"{exc} (sampler {entry.name!r})") from None
