"""Hook implementations of the server plugin (entry point ``t2i`` -> ``server``): ``t2i serve``.

The command imports FastAPI, uvicorn and the engine only when it runs (``t2i --help`` stays
light).
"""

from __future__ import annotations

from t2i.registry import hookimpl


def folder_option(flag: str, text: str):
    """A ``--NAME-dir`` option: a folder path (not a file), default None (its env var then)."""
    import click

    name = flag.lstrip("-").replace("-", "_")
    path = click.Path(file_okay=False, path_type=str)
    return click.option(flag, name, type=path, default=None, help=text)


@hookimpl
def t2i_register_commands(cli) -> None:
    """``t2i serve``: the A1111 API, the native job API and the web page."""
    import click

    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True)
    @click.option(
        "--token",
        default=None,
        help="API token: every request needs 'Authorization: Bearer TOKEN' or Basic auth "
        "with it as the password (default: $T2I_API_TOKEN).",
    )
    @click.option("--insecure", is_flag=True, help="Allow a non-local --host without a token.")
    @click.option(
        "--max-models",
        type=click.IntRange(min=1),
        default=2,
        show_default=True,
        help="Models kept loaded; the least recently used is unloaded beyond this.",
    )
    @click.option(
        "--max-body-mb",
        type=click.FloatRange(min=0.001),
        default=32.0,
        show_default=True,
        help="Largest request body.",
    )
    @click.option(
        "--recipe",
        default=None,
        help="Model selected at start: a recipe, or a models-folder checkpoint (default: the "
        "default recipe).",
    )
    @folder_option(
        "--ckpt-dir",
        "Models folder: its .safetensors / .ckpt files, diffusers folders and t2i model "
        "folders are listed in /sdapi/v1/sd-models beside the recipes and can be switched to "
        "(default: $T2I_MODELS_DIR).",
    )
    @folder_option(
        "--vae-dir",
        "VAE folder: its .safetensors files and diffusers VAE folders are listed in "
        "/sdapi/v1/sd-vae and chosen by the sd_vae setting for Stable Diffusion checkpoints "
        "(default: $T2I_VAE_DIR).",
    )
    @folder_option(
        "--lora-dir",
        "LoRA folder: a prompt's <lora:NAME:0.8> merges NAME.safetensors from it; listed "
        "in /sdapi/v1/loras (default: $T2I_LORA_DIR).",
    )
    @folder_option(
        "--embeddings-dir",
        "Textual-inversion folder: a prompt uses an embedding by its file name with "
        "Stable Diffusion checkpoints; listed in /sdapi/v1/embeddings "
        "(default: $T2I_EMBEDDINGS_DIR).",
    )
    @folder_option(
        "--controlnet-dir",
        "ControlNet folder: its .safetensors files and diffusers ControlNet folders are "
        "listed in /controlnet/model_list and steer Stable Diffusion checkpoints through "
        "txt2img / img2img's alwayson_scripts.controlnet units, as A1111's ControlNet "
        "extension (default: $T2I_CONTROLNET_DIR).",
    )
    @click.option(
        "--allow-pickle",
        is_flag=True,
        help="Let the models folder's .ckpt files load (torch.load weights_only=True); "
        "without it they are listed but refused. The VAE and ControlNet folders' .pt / .pth / "
        ".ckpt files are listed only with it.",
    )
    @click.option("--device", default=None, help="cpu, cuda, cuda:1 ...")
    @click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None)
    @click.pass_context
    def serve(ctx, host, port, token, insecure, max_models, max_body_mb, recipe, ckpt_dir,
              vae_dir, lora_dir, embeddings_dir, controlnet_dir, allow_pickle, device,
              dtype):  # fmt: skip
        """Serve the web page on http://HOST:PORT/ and the APIs (/sdapi/v1, /t2i/v1, /docs)."""
        from t2i_server.checkpoints import models_dir_from
        from t2i_server.controlnets import controlnet_dir_from
        from t2i_server.embeddings import embeddings_dir_from
        from t2i_server.loras import lora_dir_from
        from t2i_server.serve import run
        from t2i_server.vaes import vae_dir_from

        run(
            ctx,
            host=host,
            port=port,
            token=token,
            insecure=insecure,
            max_models=max_models,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            recipe=recipe,
            models_dir=models_dir_from(ckpt_dir),
            vae_dir=vae_dir_from(vae_dir),
            lora_dir=lora_dir_from(lora_dir),
            embeddings_dir=embeddings_dir_from(embeddings_dir),
            controlnet_dir=controlnet_dir_from(controlnet_dir),
            allow_pickle=allow_pickle,
            device=device,
            dtype=dtype,
        )
