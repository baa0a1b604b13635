"""``colour-world-dit``: the colour world on a Flux-shaped MM-DiT, a ``FluxPipeline`` subclass.

The denoiser is diffusers' own ``FluxTransformer2DModel`` (double- and single-stream blocks, joint
attention over text and image tokens, RoPE, QK-norm), so the project's Flux architecture traces
it unchanged: ``architecture_of`` finds ``FluxPipeline`` among the class's bases. The shape:
2 double- and 2 single-stream blocks, 2 heads x 24 (RoPE axes 8+8+8), no guidance embedding (no CFG, as the
colour world is sampled).

There is no VAE: the "latents" are the 32x32 RGB pixels in [-1, 1] (``vae_scale_factor`` 1),
packed 2x2 by the pipeline into 16x16 tokens of 12 channels, so the map grid is the same 16x16
patch grid as the UNet world's. Text: the T5 side (``text_encoder_2``) is a ``T5EncoderModel``
with **no layers** (a learned piece embedding and T5's final RMS norm: a colour token carries
only its colour, as in the UNet world) over a sentencepiece-style (Unigram) tokenizer of the
colour world's 9 words, 16 tokens long: the 7 words, ``</s>`` and 8 ``<pad>`` tokens that serve
as the attention sink (real Flux pads T5 to 512 the same way). The CLIP side is a small random
``CLIPTextModel`` over the same piece tokenizer (the CLIP vocabulary would be 10 MB of embedding
for a vector nothing reads); its pooled vector is **disconnected** (the transformer's pooled-text
projection is zero and frozen), so the prompt reaches the image only through joint attention and
every map is the whole story. Sampling: FluxPipeline's flow-matching Euler steps (shift 1), 20 steps.

A prompt with a word outside the vocabulary raises ``ValueError`` naming it.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_output import FluxPipelineOutput

from ..attribution.words import WORD_START
from ..models.tiny_parts import clip_text_encoder
from .scenes import PROMPT_WORDS, VOCABULARY

SIDE = 32  # image side, px
PACKING = 2  # pixels per map cell: the pipeline packs 2x2 pixels into one token
TEXT_TOKENS = 16  # T5 length: 7 words, </s>, 8 pads
TEXT_DIM = 64
CLIP_DIM = 32
PIECE_SPECIALS = ("<pad>", "</s>", "<unk>")
DEFAULT_STEPS = 20
_CLIP_SEED = 20261207
# the transformer's shape (kept in its config; ``build_dit_transformer`` arguments override)
DIT_SHAPE = dict(num_layers=2, num_single_layers=2, attention_head_dim=24, num_attention_heads=2)


def piece_vocab(words: tuple[str, ...] = VOCABULARY) -> list[tuple[str, float]]:
    """Unigram pieces: T5's specials (ids 0, 1, 2), then ``▁word`` for every word (equal scores)."""
    return [(s, 0.0) for s in PIECE_SPECIALS] + [(WORD_START + w, -1.0) for w in words]


def build_piece_tokenizer() -> Any:
    """The colour world's ``transformers.T5Tokenizer`` (``TEXT_TOKENS`` long)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=piece_vocab(), extra_ids=0, model_max_length=TEXT_TOKENS)


def build_text_encoder(vocab_size: int, seed: int) -> Any:
    """A seeded ``T5EncoderModel`` with no layers: piece embedding + final RMS norm."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=32, d_ff=2 * TEXT_DIM, num_layers=0,
                      num_heads=2, feed_forward_proj="gated-gelu", dropout_rate=0.0)
    encoder = T5EncoderModel(config)
    with torch.no_grad():
        encoder.shared.weight.normal_(0.0, 1.0)
    return encoder


def build_dit_transformer(seed: int, **shape: Any) -> FluxTransformer2DModel:
    """The seeded transformer at initialisation, its pooled-text projection zeroed (see module)."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=12, joint_attention_dim=TEXT_DIM, pooled_projection_dim=CLIP_DIM,
        guidance_embeds=False, axes_dims_rope=(8, 8, 8), **{**DIT_SHAPE, **shape},
    )
    disconnect_pooled(transformer)
    return transformer


def disconnect_pooled(transformer: FluxTransformer2DModel) -> None:
    """Zero and freeze the projection of CLIP's pooled vector into the time embedding."""
    for parameter in transformer.time_text_embed.text_embedder.parameters():
        with torch.no_grad():
            parameter.zero_()
        parameter.requires_grad_(False)


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


class ColourWorldDiTPipeline(FluxPipeline):
    """``FluxPipeline`` without a VAE: latents are pixels (see the module docstring)."""

    side = SIDE  # the family registry reads the geometry here (transforms.models.family)
    packing = PACKING

    _optional_components = [*FluxPipeline._optional_components, "vae"]

    def __init__(self, scheduler: Any, vae: Any, text_encoder: Any, tokenizer: Any, text_encoder_2: Any,
                 tokenizer_2: Any, transformer: Any, image_encoder: Any = None, feature_extractor: Any = None):
        super().__init__(scheduler=scheduler, vae=None, text_encoder=text_encoder, tokenizer=tokenizer,
                         text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                         image_encoder=image_encoder, feature_extractor=feature_extractor)
        from diffusers.image_processor import VaeImageProcessor

        self.vae_scale_factor = 1
        self.image_processor = VaeImageProcessor(vae_scale_factor=2)
        self.default_sample_size = SIDE
        for module in (transformer, text_encoder, text_encoder_2):
            module.eval()

    def check_words(self, prompt: str | list[str] | None) -> None:
        """``ValueError`` naming the first word outside the vocabulary, or a prompt too long."""
        for text in [prompt] if isinstance(prompt, str) else prompt or []:
            words = text.split()
            unknown = [w for w in words if w not in VOCABULARY]
            if unknown:
                raise ValueError(f"unknown word {unknown[0]!r}: colour-world-dit knows only {list(VOCABULARY)}")
            if len(words) > PROMPT_WORDS:
                raise ValueError(f"{len(words)} words given; colour-world-dit takes at most {PROMPT_WORDS}")

    def encode_prompt(self, prompt: Any, prompt_2: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.check_words(prompt)
        kwargs.setdefault("max_sequence_length", TEXT_TOKENS)
        return super().encode_prompt(prompt, prompt_2, *args, **kwargs)

    @torch.no_grad()
    def __call__(self, *args: Any, output_type: str = "pil", return_dict: bool = True, **kwargs: Any) -> Any:
        """``FluxPipeline.__call__`` (32x32 and 20 steps by default) with the pixels as latents."""
        kwargs.setdefault("height", SIDE)
        kwargs.setdefault("width", SIDE)
        kwargs.setdefault("num_inference_steps", DEFAULT_STEPS)
        kwargs.setdefault("max_sequence_length", TEXT_TOKENS)  # the trained length (FluxPipeline's default: 512)
        out = super().__call__(*args, output_type="latent", return_dict=False, **kwargs)[0]
        if output_type == "latent":
            images: Any = out
        else:
            pixels = self._unpack_latents(out, kwargs["height"], kwargs["width"], self.vae_scale_factor)
            images = self.image_processor.postprocess(pixels.clamp(-1, 1), output_type=output_type)
        return FluxPipelineOutput(images=images) if return_dict else (images,)


def build_dit_pipeline(transformer: FluxTransformer2DModel, text_encoder: Any) -> ColourWorldDiTPipeline:
    """The pipeline around a (trained) transformer and T5 side, with the fixed CLIP side."""
    pieces = len(piece_vocab())
    clip = clip_text_encoder(CLIP_DIM, _CLIP_SEED, num_attention_heads=2, vocab_size=pieces,
                             max_position_embeddings=TEXT_TOKENS, bos_token_id=0, eos_token_id=1, pad_token_id=0)
    return ColourWorldDiTPipeline(
        scheduler=build_scheduler(), vae=None, text_encoder=clip, tokenizer=build_piece_tokenizer(),
        text_encoder_2=text_encoder, tokenizer_2=build_piece_tokenizer(), transformer=transformer,
    )


def pack_pixels(x: torch.Tensor) -> torch.Tensor:
    """Images ``(B, 3, 32, 32)`` -> the pipeline's packed tokens ``(B, 256, 12)``."""
    b, c, h, w = x.shape
    return FluxPipeline._pack_latents(x, b, c, h, w)


def image_ids(height: int = SIDE, width: int = SIDE) -> torch.Tensor:
    """The pipeline's RoPE ids of the image tokens ``(h/2 * w/2, 3)``."""
    return FluxPipeline._prepare_latent_image_ids(1, height // 2, width // 2, torch.device("cpu"), torch.float32)

