"""A Mistral-style tokenizer with Mistral Small 3.1's chat template, built offline, and a tiny Mistral 3.

FLUX.2 [dev] encodes prompts with ``Mistral3ForConditionalGeneration`` (Mistral Small 3.1) through an
``AutoProcessor`` (a ``PixtralProcessor``: Mistral's byte-level "tekken" tokenizer plus Pixtral's image
processor) and its chat template: ``<s>[SYSTEM_PROMPT]SYSTEM[/SYSTEM_PROMPT][INST]PROMPT[/INST]``.
``PixtralProcessor`` needs torchvision, which this environment lacks, so the tiny model's ``tokenizer``
component is the processor's tokenizer itself: a ``PreTrainedTokenizerFast`` over the offline byte-level
BPE of ``tiny_qwen`` (``Ġ`` word starts, case kept) with Mistral's special tokens and the chat template
(Jinja, content as a string or as a list of ``{"type": "text"}`` parts, as the pipeline's
``format_input`` builds it). ``Flux2Pipeline`` calls ``tokenizer.apply_chat_template(…, tokenize=True,
padding="max_length", truncation=True)`` on it exactly as on a processor; for text-only conversations
the processor renders the same template and tokenises the text with that tokenizer
(``add_special_tokens=False``: the template writes ``<s>``).
"""

from __future__ import annotations

from typing import Any

import torch

from .tiny_qwen import byte_level_bpe

MISTRAL_SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                    "[IMG]", "[IMG_BREAK]", "[IMG_END]")
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{- text + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)


def build_mistral_tokenizer(model_max_length: int = 512) -> Any:
    """A ``PreTrainedTokenizerFast`` (byte-level BPE) with Mistral's specials and chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(), unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(MISTRAL_SPECIALS[4:])})
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def mistral3_encoder(tokenizer: Any, hidden_size: int, num_layers: int, seed: int) -> Any:
    """A seeded small ``Mistral3ForConditionalGeneration``: a Mistral text model of ``num_layers``
    (2 heads of 8, one key/value head) and a one-layer Pixtral vision tower (unused for text)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    torch.manual_seed(seed)
    config = Mistral3Config(
        text_config=MistralConfig(
            vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
            max_position_embeddings=1024,
        ),
        vision_config=PixtralVisionConfig(
            hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=1, num_attention_heads=2,
            head_dim=8, image_size=32, patch_size=8,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2, vision_feature_layer=-1,
    )
    return Mistral3ForConditionalGeneration(config)
