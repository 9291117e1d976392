"""What ``t2i serve`` runs with, and the rule that keeps it off the network without a token."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import attrs

TOKEN_ENV = "T2I_API_TOKEN"
"""The API token when ``--token`` is not given."""
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


class InsecureBindError(ValueError):
    """A non-local bind without a token (and without ``--insecure``)."""


@attrs.frozen
class ServeSettings:
    """Settings of one server.

    Attributes:
        host, port: where it listens.
        token: the API token (Bearer, or the password of Basic auth), or None for none.
        insecure: allow a non-local bind without a token.
        max_models: pipelines kept loaded (least recently used unloaded first).
        max_body_bytes: largest request body accepted (413 beyond).
        recipe: the model selected at start (``sd_model_checkpoint``); None: the default.
        device, dtype: where models run.
        models_dir: the models folder scanned for checkpoints (``--ckpt-dir``), or None.
        allow_pickle: let ``.ckpt`` files of the models folder load (``torch.load`` with
            ``weights_only=True``); without it they are listed but not loaded.
        vae_dir: the VAE folder (``--vae-dir``) listed in ``/sdapi/v1/sd-vae``, or None.
        lora_dir: the LoRA folder (``--lora-dir``) every pipeline's ``<lora:NAME:w>`` reads,
            listed in ``/sdapi/v1/loras``, or None.
        embeddings_dir: the textual-inversion folder (``--embeddings-dir``) of every recipe
            that takes ``embeddings_dir=``, listed in ``/sdapi/v1/embeddings``, or None.
        controlnet_dir: the ControlNet folder (``--controlnet-dir``) listed in
            ``/controlnet/model_list``, whose models a request's ControlNet units name, or None.
    """

    host: str = "127.0.0.1"
    port: int = 7860
    token: str | None = None
    insecure: bool = False
    max_models: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    max_body_bytes: int = 32 * 1024 * 1024
    recipe: str | None = None
    device: str | None = None
    dtype: str | None = None
    models_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    allow_pickle: bool = False
    vae_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    lora_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    embeddings_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    controlnet_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )


def token_from(option: str | None) -> str | None:
    """``--token`` if given, else ``$T2I_API_TOKEN``; an empty value means no token."""
    token = option if option is not None else os.environ.get(TOKEN_ENV)
    return token or None


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can connect)."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServeSettings) -> None:
    """Refuse to listen beyond this machine without a token, unless ``insecure``.

    Raises:
        InsecureBindError: the message says why and the two ways out.
    """
    if is_local(settings.host) or settings.token or settings.insecure:
        return
    raise InsecureBindError(
        f"refusing to listen on {settings.host}:{settings.port} without a token: anyone who "
        "can reach this address could run jobs on this machine and read its images. Give "
        f"--token TOKEN (or set {TOKEN_ENV}), or pass --insecure if the network is yours "
        "alone; --host 127.0.0.1 keeps the server local."
    )
