"""Fuzz the LDM family's loaders: mutated single files (SD1 and SD2 layouts, safetensors and
pickles, with and without t2i metadata), standalone VAE files and diffusers folders, through
``load_ldm``, ``load_vae_file`` and the text-encoder factory.

Rule (``tests/core/fuzz/fuzz_rules.py``): a loaded model or a CheckpointError naming the file;
no other exception, no hang, no memory blow-up. Tiny random weights, so each example takes
milliseconds.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "core" / "fuzz"))
from fuzz_rules import bounded_memory, fuzz_settings, obeys_rule

from t2i.checkpoints import CheckpointError
from t2i_ldm import recipes
from t2i_ldm.checkpoint import (
    META_PREDICTION,
    META_UNET,
    META_VAE,
    load_vae_file,
    single_file_state,
)
from t2i_ldm.config import UNetConfig, VAEConfig
from t2i_ldm.loader import load_ldm
from t2i_ldm.unet import UNetModel
from t2i_ldm.vae import AutoencoderKL

pytestmark = pytest.mark.filterwarnings("ignore")
_names = itertools.count()


def _random(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in module.state_dict().items()
    }


def _clip_text(width: int, vocab: int = 64) -> dict[str, torch.Tensor]:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=1,
        num_attention_heads=1,
        max_position_embeddings=77,
    )
    state = _random(CLIPTextModel(config))
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}


def _openclip_text(width: int = 64, vocab: int = 64, blocks: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    state = {
        "token_embedding.weight": r(vocab, width),
        "positional_embedding": r(77, width),
        "ln_final.weight": r(width),
        "ln_final.bias": r(width),
        "text_projection": r(width, width),
    }
    for i in range(blocks):
        p = f"transformer.resblocks.{i}."
        state |= {
            p + "ln_1.weight": r(width),
            p + "ln_1.bias": r(width),
            p + "attn.in_proj_weight": r(3 * width, width),
            p + "attn.in_proj_bias": r(3 * width),
            p + "attn.out_proj.weight": r(width, width),
            p + "attn.out_proj.bias": r(width),
            p + "ln_2.weight": r(width),
            p + "ln_2.bias": r(width),
            p + "mlp.c_fc.weight": r(4 * width, width),
            p + "mlp.c_fc.bias": r(4 * width),
            p + "mlp.c_proj.weight": r(width, 4 * width),
            p + "mlp.c_proj.bias": r(width),
        }
    return state


def _tiny_vae(base: int = 32, groups: int = 32) -> AutoencoderKL:
    return AutoencoderKL(
        VAEConfig(base_channels=base, channel_mult=(1,), num_res_blocks=1, norm_groups=groups)
    )


def _sd1() -> dict[str, torch.Tensor]:
    """An SD1-layout file the loader recognises by shapes alone (context 768, 8 heads)."""
    unet = UNetModel(
        UNetConfig(
            model_channels=32, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(1,)
        )
    )
    return single_file_state(unet, _tiny_vae(), _clip_text(64), "hf_clip")


def _sd2() -> dict[str, torch.Tensor]:
    """An SD2-layout file: OpenCLIP text tower, context 1024, head width 64, linear proj."""
    unet = UNetModel(
        UNetConfig(
            model_channels=64,
            channel_mult=(1,),
            num_res_blocks=1,
            attention_resolutions=(1,),
            num_heads=None,
            head_dim=64,
            context_dim=1024,
            use_linear_projection=True,
        )
    )
    return single_file_state(unet, _tiny_vae(), _openclip_text(), "open_clip")


def _custom() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A non-SD shape that loads through the t2i_ldm metadata configs."""
    ucfg = UNetConfig(
        model_channels=8,
        channel_mult=(1,),
        num_res_blocks=1,
        attention_resolutions=(1,),
        num_heads=2,
        context_dim=16,
        norm_groups=4,
    )
    vcfg = VAEConfig(base_channels=8, channel_mult=(1,), num_res_blocks=1, norm_groups=4)
    import attrs

    meta = {
        META_UNET: json.dumps(attrs.asdict(ucfg)),
        META_VAE: json.dumps(attrs.asdict(vcfg)),
        META_PREDICTION: "epsilon",
    }
    return single_file_state(UNetModel(ucfg), AutoencoderKL(vcfg)), meta


BASES = {"sd1": (_sd1(), {}), "sd2": (_sd2(), {"global_step": "875000"}), "custom": _custom()}
VAE_STATE = _random(_tiny_vae())


def _names_a_file(error: BaseException) -> str | None:
    """A loader's error says which file (or folder) it is about."""
    return None if getattr(error, "path", None) else f"names no file: {error}"


def _load_everything(path: Path, allow_pickle: bool) -> None:
    models = load_ldm(path, allow_pickle=allow_pickle)
    if models.text_encoder is not None:
        recipes.create_clip_text_encoder(checkpoint=path, allow_pickle=allow_pickle)


json_text = st.one_of(
    st.text(max_size=20),
    st.recursive(
        st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats() | st.text(max_size=6),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    ).map(json.dumps),
    st.sampled_from(
        ["{", "[" * 5000, '{"model_channels": 0}', '{"channel_mult": []}', '{"num_heads": "8"}']
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "model_channels",
                "channel_mult",
                "num_heads",
                "head_dim",
                "context_dim",
                "norm_groups",
                "num_res_blocks",
                "base_channels",
                "z_channels",
                "bogus",
            ]
        ),
        st.one_of(
            st.integers(-2, 70),
            st.lists(st.integers(-1, 4), max_size=20),
            st.text(max_size=3),
            st.none(),
        ),
        max_size=3,
    ).map(json.dumps),
)

tensor_change = st.sampled_from(
    ["int", "bool", "rank+", "rank-", "zero", "scalar", "wider", "delete", "rename"]
)


@st.composite
def single_files(draw):
    base = draw(st.sampled_from(sorted(BASES)))
    state, meta = BASES[base]
    state, meta = dict(state), dict(meta)
    keys = sorted(state)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(keys))
        change = draw(tensor_change)
        t = state.pop(key, None)
        if t is None or change == "delete":
            continue
        state[key + ".x" if change == "rename" else key] = {
            "int": lambda t=t: t.to(torch.int32),
            "bool": lambda t=t: t > 0,
            "rank+": lambda t=t: t[None],
            "rank-": lambda t=t: t.flatten(),
            "zero": lambda t=t: torch.zeros((0, *t.shape[1:])),
            "scalar": lambda: torch.tensor(2.0),
            "wider": lambda t=t: torch.zeros((2 * t.shape[0], *t.shape[1:])) if t.dim() else t,
            "rename": lambda t=t: t,
        }[change]()
    for _ in range(draw(st.integers(0, 2))):
        name = draw(
            st.sampled_from([META_UNET, META_VAE, META_PREDICTION, "global_step", "t2i_ldm.name"])
        )
        meta[name] = draw(json_text)
    return base, state, meta


@fuzz_settings(90)
@given(case=single_files(), as_pickle=st.booleans(), odd_meta=st.booleans())
def test_mutated_single_files(tmp_path_factory, case, as_pickle, odd_meta):
    _, state, meta = case
    folder = tmp_path_factory.mktemp("sf")
    if as_pickle:  # pickle metadata need not be strings: numbers, lists, None ...
        path = folder / f"m{next(_names)}.ckpt"
        extra = {k: (json.loads(v) if odd_meta and _is_json(v) else v) for k, v in meta.items()}
        torch.save({"state_dict": state, **extra}, path)
    else:
        path = folder / f"m{next(_names)}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    with bounded_memory():
        obeys_rule(
            "ldm single files",
            lambda: _load_everything(path, as_pickle),
            check_message=_names_a_file,
        )


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


@pytest.mark.parametrize("base", sorted(BASES))
def test_unmutated_bases_load(tmp_path, base):
    """The fuzz starts from files that load: the rule is tested on real work."""
    state, meta = BASES[base]
    path = tmp_path / "m.safetensors"
    save_file(state, str(path), metadata=meta)
    assert obeys_rule("ldm bases", lambda: _load_everything(path, False)) is None


@fuzz_settings(40)
@given(
    change=st.lists(st.tuples(st.sampled_from(sorted(VAE_STATE)), tensor_change), max_size=3),
    prefix=st.sampled_from(["", "first_stage_model.", "vae.", "junk."]),
)
def test_mutated_vae_files(tmp_path_factory, change, prefix):
    state = dict(VAE_STATE)
    for key, kind in change:
        t = state.pop(key, None)
        if t is not None and kind not in ("delete", "rename"):
            state[key] = (
                t.to(torch.int32) if kind == "int" else t.flatten() if t.dim() > 1 else t[None]
            )
    path = tmp_path_factory.mktemp("vae") / f"v{next(_names)}.safetensors"
    save_file({prefix + k: v.contiguous() for k, v in state.items()}, str(path))
    obeys_rule("ldm vae files", lambda: load_vae_file(path), check_message=_names_a_file)


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("pipe")
    diffusers.UNet2DConditionModel(
        block_out_channels=(32,),
        layers_per_block=1,
        cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        norm_num_groups=8,
        attention_head_dim=2,
        sample_size=8,
    ).save_pretrained(root / "unet")
    diffusers.AutoencoderKL(
        block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        layers_per_block=1,
        norm_num_groups=8,
    ).save_pretrained(root / "vae")
    from transformers import CLIPTextConfig, CLIPTextModel

    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
        )
    ).save_pretrained(root / "text_encoder")
    diffusers.DDIMScheduler(beta_schedule="scaled_linear").save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    _load_everything(root, False)  # the unmutated folder loads
    return root


CONFIGS = (
    "unet/config.json",
    "vae/config.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "model_index.json",
)


@fuzz_settings(40)
@given(
    file=st.sampled_from(CONFIGS),
    edits=st.lists(
        st.tuples(
            st.text(max_size=24),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-3, 2**33),
                st.floats(),
                st.text(max_size=8),
                st.lists(st.integers(-1, 64), max_size=5),
            ),
        ),
        max_size=3,
    ),
    existing=st.lists(st.integers(0, 60), max_size=3),
    raw=st.one_of(st.none(), st.binary(max_size=12), st.just(b"[1, 2]")),
)
def test_mutated_diffusers_configs(diffusers_folder, tmp_path_factory, file, edits, existing, raw):
    root = tmp_path_factory.mktemp("d") / f"f{next(_names)}"
    shutil.copytree(diffusers_folder, root)
    target = root / file
    if raw is not None:
        target.write_bytes(raw)
    else:
        data = json.loads(target.read_text())
        keys = sorted(data)
        for i in existing:  # change values of keys the file really has
            if keys:
                data[keys[i % len(keys)]] = edits[0][1] if edits else None
        for key, value in edits:
            data[key] = value
        target.write_text(json.dumps(data))
    with bounded_memory():
        obeys_rule(
            "ldm diffusers folders",
            lambda: _load_everything(root, False),
            check_message=_names_a_file,
        )


# -- the examples of issue 22, one regression test each --------------------------------------


def _save(tmp_path, state, meta=None, name="m.safetensors") -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def _edited(base: str, **changes) -> dict[str, torch.Tensor]:
    state = dict(BASES[base][0])
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"
UNET_OUT = "model.diffusion_model.out.2.weight"
TO_K = "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"
RES_OUT = "model.diffusion_model.input_blocks.1.0.out_layers.3.weight"
VAE_IN = "first_stage_model.encoder.conv_in.weight"


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        (UNET_OUT, torch.zeros(4, 32, 3, 3, dtype=torch.int32), "wrong-dtype keys"),
        (UNET_IN, None, "input_blocks.0.0.weight' is missing"),  # once a raw SafetensorError
        (TO_K, None, "to_k.weight' is missing"),
        (RES_OUT, None, "out_layers.3.weight' is missing"),
        (UNET_IN, torch.zeros(32, 4), "expected 4 dimensions"),  # once ValueError
        (UNET_IN, torch.zeros(0, 4, 3, 3), "each >= 1"),  # once ZeroDivisionError
        (TO_K, torch.zeros(32), "expected 2 dimensions"),  # once IndexError
        (RES_OUT, torch.zeros(48, 32, 3, 3), "not a multiple of the first level's 32"),
        (VAE_IN, torch.zeros(8, 3, 3, 3), "invalid configuration"),  # once a config ValueError
        (VAE_IN, torch.zeros(32, 3), "expected 4 dimensions"),
    ],
)
def test_content_that_does_not_fit_names_key_and_file(tmp_path, key, value, needle):
    path = _save(tmp_path, _edited("sd1", **{key.replace(".", "__"): value}))
    with pytest.raises(CheckpointError, match=needle) as info:
        load_ldm(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    ("meta", "needle"),
    [
        ({META_UNET: "{not json"}, "not valid JSON"),  # once JSONDecodeError
        ({META_UNET: "[1, 2]"}, "must be a JSON object"),  # once AttributeError
        ({META_UNET: "[" * 5000 + "]" * 5000}, "not valid JSON"),  # once RecursionError
        ({META_UNET: '{"bogus": 1}'}, "unknown: bogus"),  # once TypeError
        ({META_UNET: '{"model_channels": "x"}'}, "invalid UNetConfig"),
        ({META_VAE: '{"channel_mult": [1, 2, "a"]}'}, "invalid VAEConfig"),
        ({META_UNET: '{"channel_mult": [' + ",".join(["1"] * 40) + "]}"}, "the limits are"),
    ],
)
def test_malformed_t2i_metadata(tmp_path, meta, needle):
    state, base_meta = BASES["custom"]
    path = _save(tmp_path, state, {**base_meta, **meta})
    with pytest.raises(CheckpointError, match=needle) as info:
        load_ldm(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize("step", ["875000.5", "lots", "", "-3"])
def test_a_global_step_that_is_not_an_integer_is_ignored(tmp_path, step):
    state, _ = BASES["sd2"]
    path = _save(tmp_path, state, {"global_step": step})
    assert load_ldm(path).config.prediction_type == "v_prediction"  # the SD2 default


def test_pickle_metadata_of_any_type_and_non_string_keys(tmp_path):
    state, _ = BASES["sd2"]
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": state, "global_step": [875000], 7: "seven"}, path)
    assert load_ldm(path, allow_pickle=True).config.name == "sd2-768-v"
    torch.save({**state, 3: torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="tensor names must be strings"):
        load_ldm(path, allow_pickle=True)


@pytest.mark.parametrize(
    ("file", "change", "needle"),
    [
        ("unet/config.json", {"block_out_channels": ["32"]}, "block_out_channels"),
        ("unet/config.json", {"block_out_channels": []}, "block_out_channels"),
        ("unet/config.json", {"attention_head_dim": 0}, "attention_head_dim"),
        ("unet/config.json", {"down_block_types": "CrossAttnDownBlock2D"}, "down_block_types"),
        ("unet/config.json", {"layers_per_block": [1, 2]}, "entries for 1 blocks"),
        ("unet/config.json", {"cross_attention_dim": None}, "cross_attention_dim"),
        ("vae/config.json", {"latent_channels": "4"}, "latent_channels"),
        ("vae/config.json", {"scaling_factor": [0.18]}, "scaling_factor"),
        ("scheduler/scheduler_config.json", {"beta_start": "x"}, "beta_start"),
        ("scheduler/scheduler_config.json", {"prediction_type": ["v"]}, "prediction_type"),
        ("text_encoder/config.json", {"hidden_size": "32"}, "hidden_size"),
        ("text_encoder/config.json", {"hidden_act": 5}, "hidden_act"),
        ("model_index.json", [1, 2], "must hold a JSON object"),
    ],
)
def test_bad_diffusers_config_values_name_the_file(
    diffusers_folder, tmp_path, file, change, needle
):
    root = tmp_path / "pipe"
    shutil.copytree(diffusers_folder, root)
    data = json.loads((root / file).read_text())
    data = change if isinstance(change, list) else {**data, **change}
    (root / file).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=needle) as info:
        _load_everything(root, False)
    assert Path(file).name in str(info.value) or str(root) in str(info.value)


def test_engine_blames_the_file_not_the_options(tmp_path):
    from t2i import Engine
    from t2i.engine import EngineError
    from t2i.testing import make_manager
    from t2i_ldm import plugin

    manager = make_manager(plugin)
    path = _save(tmp_path, _edited("sd1", **{UNET_IN.replace(".", "__"): torch.zeros(32, 4)}))
    with pytest.raises(CheckpointError, match="expected 4 dimensions"):
        Engine.build("ldm", plugins=manager, checkpoint=path)
    for option, value in (("prediction_type", "v"), ("clip_skip", 0), ("text_head_dim", 0)):
        with pytest.raises(EngineError, match=f"option {option}="):
            Engine.build("ldm", plugins=manager, checkpoint=path, **{option: value})


def test_t2i_generate_with_a_bad_checkpoint_exits_2(tmp_path):
    from click.testing import CliRunner

    from t2i.cli.main import cli
    from t2i.plugins import set_plugin_manager
    from t2i.testing import make_manager
    from t2i_ldm import plugin

    path = _save(tmp_path, _edited("sd1", **{TO_K.replace(".", "__"): None}))
    previous = set_plugin_manager(make_manager(plugin))
    try:
        out = CliRunner().invoke(
            cli, ["generate", "x", "--recipe", "ldm", "--checkpoint", str(path)]
        )
    finally:
        set_plugin_manager(previous)
    assert out.exit_code == 2, out.output
    assert str(path) in out.output and "to_k.weight' is missing" in out.output


@pytest.mark.parametrize("content", ["{bad", "[1]", '{"unet": 5}', "zero-width", b"\xff"])
def test_a_malformed_ldm_shapes_folder_fails_at_build(tmp_path, content):
    from t2i import Engine
    from t2i.testing import make_manager
    from t2i_ldm import plugin
    from t2i_ldm.shapes_model import WEIGHTS_DIR

    folder = tmp_path / "model"
    shutil.copytree(WEIGHTS_DIR, folder)
    spec = json.loads((folder / "model.json").read_text())
    if content == "zero-width":  # valid JSON, invalid sizes
        content = json.dumps({**spec, "unet": {**spec["unet"], "model_channels": 0}})
    raw = content if isinstance(content, bytes) else content.encode()
    (folder / "model.json").write_bytes(raw)
    with pytest.raises(CheckpointError, match="not an ldm-shapes model spec") as info:
        Engine.build("ldm-shapes", plugins=make_manager(plugin), checkpoint=folder)
    assert info.value.path == str(folder / "model.json")
