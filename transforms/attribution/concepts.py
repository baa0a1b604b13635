"""ConceptAttention (Helbling et al., ICML 2025) on joint-attention transformers (Flux, SD3).

Concept tokens (one small sequence per image: the concept words' text-encoder features) go
through the double-stream blocks with the **text stream's weights** (``norm1_context``,
``add_{q,k,v}_proj``, ``norm_added_{q,k}``, ``to_add_out``, ``norm2_context``, ``ff_context``),
as the official implementation does. In each block the concepts attend to ``[concept keys ;
image keys]`` (the image keys the model's own attention uses, rotary embedding included; the
concepts' own positions are Flux's text ids, zero, i.e. no rotation); image and text tokens never
attend to concepts, so the image is unchanged. Only the concepts' rows are computed:
``r × (r + N)`` extra scores per block and image.

Saliency, per selected block and step: the dot product of each concept's attention output and
each image token's attention output, both **before the output projection** (heads flattened), a
softmax over the concepts per image token; the maps are the mean over the selected blocks and
steps, on the model's patch grid.

Multi-piece concept words: every piece of a word is a concept token (the official code keeps only
the first T5 piece, so "skyscraper" is ``▁sky``); a concept's score is the mean of its pieces'
dot products, i.e. the dot product of the mean of its pieces' output vectors, before the softmax.

The paper's **cross-attention baseline** (``ConceptConfig(space="cross-attention")``): the same
concept stream, but the score is the dot product of each image token's query with each concept's
key, both after QK-norm and before the rotary embedding (heads flattened into one dot product),
then the same softmax over concepts and means (the paper-time definition; the later ports differ).

Defaults (the official pipeline's): the last four double-stream blocks (Flux.1: 15–18 of 19),
every step, softmax over concepts. The modulation vector of the concept stream is the family's:
Flux the official one (``time_text_embed(t, guidance, pooled = 0)``), SD3 the prompt's ``temb``
(the official SD3 port).
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from .config import MAX_CONCEPTS, ConceptConfig
from .words import FUNCTION_WORDS, TokenizedPrompt

if TYPE_CHECKING:
    from .store import HeatMapStore

logger = logging.getLogger(__name__)

CONCEPT_CACHE = 4096  # concept encodings kept per pipeline
_CACHES: "weakref.WeakKeyDictionary[Any, OrderedDict[str, torch.Tensor]]" = weakref.WeakKeyDictionary()

def content_words(tokenized: TokenizedPrompt) -> list[str]:
    """The prompt's distinct content words (letters only, not function words), in prompt order,
    compared case-insensitively (the first spelling kept)."""
    seen: dict[str, str] = {}
    for word in tokenized.words:
        text = word.word.strip()
        if text.isalpha() and text.lower() not in FUNCTION_WORDS:
            seen.setdefault(text.lower(), text)
    return list(seen.values())[:MAX_CONCEPTS]


@dataclass
class ConceptTokens:
    """One image's concept sequence: text-encoder features ``(R, text_dim)`` of every piece and,
    per piece, the index of its concept in ``names``."""

    names: list[str]
    features: torch.Tensor
    groups: torch.Tensor  # (R,) long


class _Stream:
    """One image's concept residual stream within one transformer call."""

    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden  # (1, R, dim)
        self.normed: torch.Tensor | None = None
        self.gates: tuple[torch.Tensor, ...] | None = None
        self.attended: torch.Tensor | None = None


class ConceptRecorder:
    """Runs the concept stream alongside a traced generation and accumulates the saliency maps.

    ``hooks(denoiser)`` installs a forward pre-hook on the transformer (it embeds each image's
    concepts and, for Flux, the concept modulation vector) and pre/post hooks on the selected
    double-stream blocks (the concepts' ``norm1_context`` and residual update); the blocks'
    attention processors call ``attend`` with what their kernel received and returned. The store
    (``HeatMapStore``) is followed for the step, the image count and the CFG layout.
    """

    def __init__(self, config: ConceptConfig, store: "HeatMapStore", architecture: Any, tokens: list[ConceptTokens]) -> None:
        self.config = config
        self.store = store
        self.architecture = architecture
        self.tokens = tokens
        self.blocks: list[int] = []
        self.names: dict[str, int] = {}  # attention processor name -> block index
        self.sums: list[torch.Tensor | None] = [None] * len(tokens)
        self.count = 0
        self._streams: list[_Stream | None] | None = None
        self._temb: torch.Tensor | None = None
        self._handles: list[Any] = []

    # -- installation ---------------------------------------------------------------------------
    def processor_names(self, denoiser: Any) -> dict[str, int]:
        """Attention processor name -> block index of every block the concept stream runs through
        (from the first block to the last selected one)."""
        blocks = list(self.architecture.concept_blocks(denoiser))
        self.blocks = self.config.block_indices(len(blocks))
        last = self.blocks[-1]
        self.names = {name: i for i, (name, _) in enumerate(blocks) if i <= last}
        return self.names

    def install(self, denoiser: Any) -> None:
        """Register the transformer and block hooks (``remove`` takes them off)."""
        names = self.processor_names(denoiser)
        self._handles.append(denoiser.register_forward_pre_hook(self._begin_call, with_kwargs=True))
        for i, (_, block) in enumerate(self.architecture.concept_blocks(denoiser)):
            if i in names.values():
                self._handles.append(block.register_forward_pre_hook(self._pre_block(block), with_kwargs=True))
                self._handles.append(block.register_forward_hook(self._post_block(block)))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._streams = None

    # -- one transformer call -------------------------------------------------------------------
    def wanted(self) -> bool:
        """Whether the current step contributes (and any image has a concept)."""
        return self.store.num_images > 0 and self.config.keeps_step(self.store.step) and any(
            t.groups.numel() for t in self.tokens
        )

    def _begin_call(self, denoiser: Any, args: tuple, kwargs: dict) -> None:
        self._streams = None
        if not self.wanted():
            return
        embed = denoiser.context_embedder
        with torch.no_grad():
            self._streams = [
                _Stream(embed(t.features.to(embed.weight.device, embed.weight.dtype)[None])) if t.names else None
                for t in self.tokens
            ]
            self._temb = self.architecture.concept_temb(denoiser, kwargs)

    def active(self, name: str) -> bool:
        """Whether the processor ``name`` runs the concept attention in this call."""
        return self._streams is not None and name in self.names

    def _rows(self, batch: int) -> int:
        """Index of the first conditional image in a batch of ``batch`` rows."""
        return self.store.conditional_rows("concepts", batch).start

    def _pre_block(self, block: Any) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            if self._streams is None:
                return
            temb = kwargs.get("temb", args[2] if len(args) > 2 else None)
            temb = self._temb if self._temb is not None else temb
            first = self._rows(temb.shape[0])
            with torch.no_grad():
                for i, stream in enumerate(self._streams):
                    if stream is None:
                        continue
                    emb = temb[first + i : first + i + 1]
                    out = concept_norm1(module, stream.hidden, emb)
                    stream.normed, stream.gates = out[0], out[1:]
        return hook

    def _post_block(self, block: Any) -> Any:
        def hook(module: Any, args: tuple, output: Any) -> None:
            if self._streams is None:
                return
            with torch.no_grad():
                for stream in self._streams:
                    if stream is None:
                        continue
                    if stream.attended is not None and stream.gates:
                        stream.hidden = residual_update(module, stream.hidden, stream.attended, stream.gates)
                    stream.normed, stream.gates, stream.attended = None, None, None
        return hook

    def attend(
        self,
        name: str,
        attn: Any,
        key: torch.Tensor,
        value: torch.Tensor,
        output: torch.Tensor,
        image: slice,
        image_states: torch.Tensor | None = None,
    ) -> None:
        """One block's concept attention for every conditional image: ``key``/``value`` ``[B, S,
        H, D]`` as the model's kernel received them, ``output`` ``[B, S, H, D]`` what it returned,
        ``image`` where the image tokens are in the sequence; ``image_states`` ``[B, N, C]`` the
        image stream the attention projects (the cross-attention baseline's queries)."""
        assert self._streams is not None
        block = self.names[name]
        first = self._rows(key.shape[0])
        baseline = self.config.space == "cross-attention"
        if baseline and image_states is None:
            raise RuntimeError(f"{name}: the cross-attention baseline needs the image stream")
        with torch.no_grad():
            for i, stream in enumerate(self._streams):
                if stream is None or stream.normed is None:
                    continue
                row = first + i
                vectors = concept_attention(attn, stream.normed, key[row : row + 1, image], value[row : row + 1, image])
                if block in self.blocks and baseline:
                    queries = _heads(attn.to_q, getattr(attn, "norm_q", None), image_states[row : row + 1], attn.heads)
                    keys = _heads(attn.add_k_proj, getattr(attn, "norm_added_k", None), stream.normed, attn.heads)
                    self._accumulate(i, keys[0].flatten(1), queries[0].flatten(1))
                elif block in self.blocks:
                    self._accumulate(i, vectors[0], output[row, image].flatten(1))
                to_add_out = getattr(attn, "to_add_out", None)
                stream.attended = None if to_add_out is None else to_add_out(vectors.to(stream.hidden.dtype))
        if block in self.blocks:
            self.count += 1

    def _accumulate(self, i: int, concept_vectors: torch.Tensor, image_vectors: torch.Tensor) -> None:
        scores = concept_scores(concept_vectors, image_vectors, self.tokens[i].groups, len(self.tokens[i].names))
        self.sums[i] = scores if self.sums[i] is None else self.sums[i] + scores

    # -- results --------------------------------------------------------------------------------
    def maps(self, grid: tuple[int, int]) -> list[torch.Tensor]:
        """Per image the concept maps ``(len(names), h, w)`` float32 on the host: the mean over the
        contributing (selected block, step) calls of the softmax over concepts (zeros for an image
        without concepts; ``RuntimeError`` when no call contributed)."""
        if self.count == 0 and any(t.names for t in self.tokens):
            raise RuntimeError("no concept map was recorded: check --concept-blocks and --concept-steps against the run")
        out = []
        for tokens, total in zip(self.tokens, self.sums):
            if total is None:
                out.append(torch.zeros(len(tokens.names), *grid))
            else:
                out.append((total / self.count).reshape(len(tokens.names), *grid).cpu())
        return out


def concept_norm1(block: Any, hidden: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The text stream's first norm of a double-stream block on the concepts: ``(normed, gate_msa,
    shift_mlp, scale_mlp, gate_mlp)``, or ``(normed,)`` in a block whose text stream ends there
    (SD3's last block, ``context_pre_only``: ``AdaLayerNormContinuous``)."""
    if getattr(block, "context_pre_only", False):
        return (block.norm1_context(hidden, emb),)
    return tuple(block.norm1_context(hidden, emb=emb))


def _heads(linear: Any, norm: Any, states: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, S, H, D]`` projections of ``states`` with the attention's QK-norm (no rotation)."""
    projected = linear(states).unflatten(-1, (heads, -1))
    return projected if norm is None else norm(projected)


def concept_attention(attn: Any, normed: torch.Tensor, image_key: torch.Tensor, image_value: torch.Tensor) -> torch.Tensor:
    """The concept rows of the attention over ``[concepts ; image]`` for one image: concept
    queries, keys and values from the text stream's projections and QK-norms (no rotation: the
    concepts' positions are zero), image keys/values ``(1, N, H, D)`` as the model's kernel got
    them; returns the attention output before the output projection, ``(1, R, H·D)``."""
    heads = image_key.shape[2]

    query = _heads(attn.add_q_proj, getattr(attn, "norm_added_q", None), normed, heads)
    key = torch.cat([_heads(attn.add_k_proj, getattr(attn, "norm_added_k", None), normed, heads), image_key.to(normed.dtype)], 1)
    value = torch.cat([attn.add_v_proj(normed).unflatten(-1, (heads, -1)), image_value.to(normed.dtype)], 1)
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


def concept_scores(concept_vectors: torch.Tensor, image_vectors: torch.Tensor, groups: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """Softmax over concepts of the dot products ``(num_concepts, N)`` of each concept (the mean
    of its pieces' scores) with each image token's output vector, float32."""
    pieces = concept_vectors.float() @ image_vectors.float().T  # (R, N)
    sums = pieces.new_zeros(num_concepts, pieces.shape[1]).index_add_(0, groups.to(pieces.device), pieces)
    counts = torch.bincount(groups.to(pieces.device), minlength=num_concepts).clamp(min=1).to(pieces.dtype)
    return (sums / counts[:, None]).softmax(0)


def residual_update(block: Any, hidden: torch.Tensor, attended: torch.Tensor, gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """The text stream's residual update of a double-stream block (``norm2_context``,
    ``ff_context`` and the AdaLN-Zero gates of ``norm1_context``) applied to the concepts."""
    gate_msa, shift_mlp, scale_mlp, gate_mlp = gates
    hidden = hidden + gate_msa.unsqueeze(1) * attended
    normed = block.norm2_context(hidden) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    hidden = hidden + gate_mlp.unsqueeze(1) * block.ff_context(normed)
    if hidden.dtype == torch.float16:
        hidden = hidden.clip(-65504, 65504)
    return hidden


def concept_names(config: ConceptConfig, tokenized: TokenizedPrompt, class_names: Sequence[str] = ()) -> list[str]:
    """One prompt's concepts: the configured list, else its matched class names (label order),
    else its content words."""
    if config.concepts is not None:
        return list(config.concepts)
    if class_names:
        return list(dict.fromkeys(class_names))[:MAX_CONCEPTS]
    return content_words(tokenized)


def encode_concepts(architecture: Any, pipe: Any, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Name -> text features ``(pieces, dim)`` (float32, host): each name encoded alone, as a
    prompt, by the family's text encoders in one batched call (``architecture.concept_embeddings``),
    and the rows of every one of its pieces kept (where the word tokenizer puts them:
    ``text_layout``); ``ValueError`` for a name without tokens.

    Encodings are kept per pipeline (the last ``CONCEPT_CACHE`` names): a corpus names the same
    classes and words again and again, and a name's encoding depends on nothing else."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    cache = _CACHES.setdefault(pipe, OrderedDict())
    missing = [n for n in names if n not in cache]
    if missing:
        embeds = architecture.concept_embeddings(pipe, missing)
        offset = architecture.text_layout(pipe).offset
        for k, name in enumerate(missing):
            pieces = len(architecture.tokenize(pipe, name).tokens)
            if pieces == 0:
                raise ValueError(f"concept {name!r} has no tokens")
            cache[name] = embeds[k, offset : offset + pieces].float().cpu()
    table = {}
    for name in names:
        cache.move_to_end(name)
        table[name] = cache[name]
    while len(cache) > CONCEPT_CACHE:
        cache.popitem(last=False)
    return table


def concept_tokens(names: Sequence[str], table: dict[str, torch.Tensor]) -> ConceptTokens:
    """One image's concept sequence from ``encode_concepts``'s table."""
    names = list(names)
    if not names:
        return ConceptTokens([], torch.zeros(0, 0), torch.zeros(0, dtype=torch.long))
    groups = [k for k, name in enumerate(names) for _ in range(table[name].shape[0])]
    return ConceptTokens(names, torch.cat([table[n] for n in names]), torch.tensor(groups, dtype=torch.long))
