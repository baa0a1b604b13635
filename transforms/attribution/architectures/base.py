"""What a denoiser architecture tells the tracer: one small class per architecture.

The tracer, the store and ``generate_traced`` are generic; an ``Architecture`` says which module
is the denoiser, which tokenizer's tokens are the prompt's words and where they sit among the
text keys, which attention modules to trace (and their kind: ``down``/``mid``/``up`` in a UNet,
``joint`` in SD3, ``double``/``single`` in Flux), which processor records them, the map grid,
and how the pipeline is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..words import TokenizedPrompt, max_prompt_tokens, tokenize_prompt

if TYPE_CHECKING:
    from ..config import GenerationConfig
    from ..store import HeatMapStore


@dataclass(frozen=True)
class TextLayout:
    """Where a prompt's tokens are among the denoiser's text keys.

    ``offset``: key index of the first prompt token; ``prefix``: global-map rows kept before it
    (CLIP's start token: 1; T5 has none: 0); ``max_tokens``: prompt tokens that fit the window.
    """

    offset: int
    prefix: int
    max_tokens: int

    def rows(self, num_tokens: int) -> slice:
        """Key rows of a prompt's global map: the prefix, its tokens and the first end token."""
        return slice(self.offset - self.prefix, self.offset + num_tokens + 1)

    def span(self, token_counts: Sequence[int]) -> slice:
        """The keys every prompt's ``rows`` lie in (prompts of these token counts): the only keys a
        batch's store needs to keep."""
        return slice(self.offset - self.prefix, self.offset + max(token_counts) + 1)


class Architecture:
    """Base class: subclasses fill in what differs (see the module docstring)."""

    name = "base"
    conditional_first = False  # a CFG batch is [uncond; cond]; True: [cond; uncond] (Z-Image)

    def denoiser(self, pipe: Any) -> Any:
        """The module whose attention is traced."""
        raise NotImplementedError

    def word_tokenizer(self, pipe: Any) -> Any:
        """The tokenizer whose tokens define the prompt's tokens and words."""
        return pipe.tokenizer

    def text_layout(self, pipe: Any) -> TextLayout:
        """Where the prompt tokens are among the text keys."""
        return TextLayout(offset=1, prefix=1, max_tokens=max_prompt_tokens(self.word_tokenizer(pipe)))

    def tokenize(self, pipe: Any, prompt: str) -> TokenizedPrompt:
        """Tokenise ``prompt`` as the traced keys see it (``ValueError`` for a prompt the model
        cannot take: a failure record)."""
        return tokenize_prompt(self.word_tokenizer(pipe), prompt, self.text_layout(pipe).max_tokens)

    def traced_modules(self, denoiser: Any) -> dict[str, str]:
        """Processor name → kind of every attention module that attends to text."""
        raise NotImplementedError

    def processor(self, name: str, kind: str, store: "HeatMapStore", fallback: Any) -> Any:
        """The recording processor for one traced module (``fallback``: its original processor)."""
        raise NotImplementedError

    def concept_blocks(self, denoiser: Any) -> list[tuple[str, Any]]:
        """(attention processor name, block) of every double-stream block, in call order: where
        ConceptAttention's concept stream runs (``ValueError`` for a family without them)."""
        raise ValueError(
            f"concept maps (ConceptAttention) need a joint-attention transformer (SD3, Flux); "
            f"this is a {self.name} model: leave out --concept-maps"
        )

    def concept_temb(self, denoiser: Any, kwargs: dict[str, Any]) -> Any:
        """The concept stream's modulation vector for one denoiser call (its keyword arguments
        ``kwargs``), or ``None`` to use the block's own ``temb``."""
        return None

    def concept_embeddings(self, pipe: Any, names: Sequence[str]) -> Any:
        """Each name encoded alone as a prompt: the text features ``(len(names), keys, dim)`` the
        denoiser's ``context_embedder`` takes."""
        raise NotImplementedError

    def default_size(self, pipe: Any) -> tuple[int, int]:
        """(height, width) in pixels when the run does not set them."""
        sample = self.denoiser(pipe).config.sample_size
        h, w = (sample, sample) if isinstance(sample, int) else sample
        scale = int(pipe.vae_scale_factor)
        return int(h) * scale, int(w) * scale

    def map_grid(self, pipe: Any, height: int, width: int) -> tuple[int, int]:
        """The grid of the finest maps (the store's ``latent_size``)."""
        scale = int(pipe.vae_scale_factor)
        return height // scale, width // scale

    def uses_cfg(self, config: "GenerationConfig") -> bool:
        """Whether the denoiser batch is a CFG one: ``[unconditional; conditional]`` (or
        ``[conditional; unconditional]`` with ``conditional_first``)."""
        return config.uses_cfg

    def call_prompts(
        self, prompts: list[str], negatives: list[str] | None, per_prompt: int
    ) -> tuple[list[str], list[str] | None, int]:
        """The prompts, negative prompts and ``num_images_per_prompt`` the pipeline is called with
        for ``per_prompt`` images of each prompt (prompt-major, like the generators): as given."""
        return prompts, negatives, per_prompt

    def call_kwargs(
        self, config: "GenerationConfig", negatives: Sequence[str] | None, pipe: Any = None
    ) -> dict[str, Any]:
        """Pipeline arguments that differ per architecture (guidance, negatives, text length read
        from ``pipe``'s tokenizers); ``ValueError`` for settings the architecture cannot trace.
        No negative prompt given: none is passed, so the pipeline does its own default."""
        kwargs: dict[str, Any] = {"guidance_scale": config.guidance_scale}
        if negatives is not None:
            kwargs["negative_prompt"] = negatives
        return kwargs
