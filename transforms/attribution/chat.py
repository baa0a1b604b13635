"""The prompt's tokens inside a chat-templated text: which text keys are the user prompt's.

Pipelines that encode a prompt through a chat template (Flux.2 with Qwen3 or Mistral, Z-Image, Qwen-Image) tokenise the
templated text (template tokens, a system message, the prompt, the generation prompt, pads) in
one piece; every token is a text key the image attends to, and only the prompt's are mapped. The
prompt's keys are found in the pipeline's own tokenisation of the templated text: the prompt's
character span (located by rendering the template around a placeholder and checking the template
inserts the prompt verbatim) against the tokens' character offsets. A prompt whose first or last
token would merge with the template's text (a leading newline after the user turn's ``\\n``) has
no keys of its own and is refused (``ValueError``: a failure record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .words import TokenizedPrompt, prompt_of_tokens

_PLACEHOLDER = "\ue000daam-prompt\ue001"  # private-use characters: in no prompt, no template


@dataclass(frozen=True)
class TemplatedPrompt:
    """A prompt among the keys of its templated text: its tokens (``tokenized``, at most
    ``max_tokens`` of them) start at key ``offset``."""

    tokenized: TokenizedPrompt
    offset: int


def prompt_span(render: Callable[[str], str], prompt: str) -> tuple[str, int]:
    """The templated text of ``prompt`` (``render``: the pipeline's own template call) and the
    prompt's first character in it (``ValueError`` if the template does not insert it verbatim)."""
    text = render(prompt)
    parts = render(_PLACEHOLDER).split(_PLACEHOLDER)
    if len(parts) != 2 or text != parts[0] + prompt + parts[1]:
        raise ValueError("the chat template does not insert the prompt verbatim: its tokens cannot be located")
    return text, len(parts[0])


def prompt_tokens_in(tokenizer: Any, text: str, start: int, end: int, **encode: Any) -> tuple[int, list[int]]:
    """The key of the first token of ``text[start:end]`` (the prompt) and the indices of its
    tokens in ``tokenizer(text, **encode)`` (the pipeline's own call), by character offsets;
    ``ValueError`` where a token straddles the prompt's edge (a leading newline joins the
    template's ``\\n``), the prompt has no token, or its tokens are not contiguous."""
    offsets = [(int(a), int(b)) for a, b in tokenizer(text, return_offsets_mapping=True, verbose=False,
                                                      **encode)["offset_mapping"]]
    inside = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not inside:
        raise ValueError(f"prompt {text[start:end]!r} has no tokens of its own in the templated text")
    first, last = inside[0], inside[-1]
    if offsets[first][0] < start or offsets[last][1] > end or inside != list(range(first, last + 1)):
        raise ValueError(
            f"prompt {text[start:end]!r}: its first or last token merges with the chat template's text "
            "(e.g. a leading newline), so it has no keys of its own; strip the prompt"
        )
    return first, inside


def templated_prompt(
    tokenizer: Any,
    render: Callable[[str], str],
    prompt: str,
    max_length: int,
    max_tokens: int,
    **encode: Any,
) -> TemplatedPrompt:
    """``prompt``'s tokens as the pipeline tokenises its templated text (``tokenizer(text,
    truncation=True, max_length=max_length, **encode)``, as the pipeline calls it; padding adds
    keys after the text only), at most ``max_tokens`` of them, and the key of the first."""
    text, start = prompt_span(render, prompt)
    full = tokenizer(text, verbose=False, **encode)["input_ids"]  # untruncated: the prompt's count
    first, inside = prompt_tokens_in(tokenizer, text, start, start + len(prompt), **encode)
    kept = min(len(inside), max_tokens, max(0, max_length - first))
    truncated = tokenizer(text, truncation=True, max_length=max_length, **encode)["input_ids"]
    if truncated[first : first + kept] != full[first : first + kept]:
        raise ValueError(f"prompt {prompt!r}: truncating the templated text changes its tokens")
    tokens = tokenizer.convert_ids_to_tokens([full[i] for i in inside])
    return TemplatedPrompt(prompt_of_tokens(tokenizer, prompt, tokens, kept), first)
