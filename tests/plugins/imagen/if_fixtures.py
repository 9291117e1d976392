"""Tiny random DeepFloyd IF configurations (diffusers' layout) for the parity tests."""

from __future__ import annotations

TINY_STAGE_I = dict(
    sample_size=16,
    in_channels=3,
    out_channels=6,
    down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
    up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=8,
    cross_attention_dim=32,
    encoder_hid_dim=48,
    addition_embed_type="text",
    addition_embed_type_num_heads=2,
    act_fn="gelu",
    norm_num_groups=8,
    resnet_time_scale_shift="scale_shift",
    resnet_skip_time_act=True,
    resnet_out_scale_factor=1.4142135623730951,
    mid_block_scale_factor=1.4142135623730951,
    time_embedding_act_fn="gelu",
    cross_attention_norm="group_norm",
)
"""Stage I as IF-I-M is configured (ResNet up/down blocks, added-KV attention, pooled text)."""

TINY_STAGE_II = dict(
    TINY_STAGE_I,
    sample_size=32,
    in_channels=6,
    class_embed_type="timestep",
    only_cross_attention=True,
    layers_per_block=(1, 2),
    time_embedding_dim=96,
)
"""Stage II as IF-II-M: 6 input channels, noise level as a timestep class embedding,
cross-attention only, per-block layers."""

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "big", "small", "left",
         "of", "on", "the", "photo", "cat")  # fmt: skip


def tiny_t5(seed: int = 0):
    """A random 2-layer T5 encoder (d_model 48) and a fast Unigram tokenizer of WORDS."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i * 0.1) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(vocab), d_model=48, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return tokenizer, T5EncoderModel(config).eval()


def if_schedulers(max_value: float):
    """IF's DDPM scheduler config (learned range, dynamic thresholding 0.95)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        variance_type="learned_range", beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon", thresholding=True, dynamic_thresholding_ratio=0.95,
        sample_max_value=max_value,
    )  # fmt: skip


def write_if_folders(root, *, fp16: bool = False, seed: int = 0):
    """Tiny random IF stage I and stage II folders written by diffusers' save_pretrained."""
    import torch
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline, UNet2DConditionModel

    tokenizer, t5 = tiny_t5(seed)
    torch.manual_seed(seed + 1)
    unet1 = UNet2DConditionModel(**TINY_STAGE_I).eval()
    torch.manual_seed(seed + 2)
    unet2 = UNet2DConditionModel(**TINY_STAGE_II).eval()
    common = dict(safety_checker=None, feature_extractor=None, watermarker=None,
                  requires_safety_checker=False)  # fmt: skip
    stage1 = IFPipeline(tokenizer=tokenizer, text_encoder=t5, unet=unet1,
                        scheduler=if_schedulers(1.5), **common)  # fmt: skip
    stage2 = IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=unet2, scheduler=if_schedulers(1.0),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), **common,
    )  # fmt: skip
    dirs = root / "IF-I-tiny", root / "IF-II-tiny"
    kwargs = {"variant": "fp16"} if fp16 else {}
    if fp16:
        stage1.to(torch.float16), stage2.to(torch.float16)
    stage1.save_pretrained(dirs[0], **kwargs)
    stage2.save_pretrained(dirs[1], **kwargs)
    if fp16:
        stage1.to(torch.float32), stage2.to(torch.float32)
    return dirs, stage1, stage2
