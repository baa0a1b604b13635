"""colour-world tokenizer: one token per word, DAAM's word rule, round trips, unknown words."""

from __future__ import annotations

import pytest

from transforms.attribution.words import max_prompt_tokens, token_merge_indices, tokenize_prompt
from transforms.colour_world.scenes import ALL_PROMPTS, VOCABULARY
from transforms.colour_world.tokenizer import ColourWorldTokenizer


@pytest.fixture(scope="module")
def tokenizer() -> ColourWorldTokenizer:
    return ColourWorldTokenizer()


def test_round_trip_every_prompt(tokenizer: ColourWorldTokenizer) -> None:
    for prompt in ALL_PROMPTS:
        ids = tokenizer.word_ids(prompt.text)
        assert len(ids) == 7
        assert tokenizer.decode(ids) == prompt.text
        assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize(prompt.text)) == ids
    assert tokenizer.word_ids(" ".join(VOCABULARY)) == list(range(len(VOCABULARY)))


def test_project_word_rule(tokenizer: ColourWorldTokenizer) -> None:
    assert max_prompt_tokens(tokenizer) == 7
    tp = tokenize_prompt(tokenizer, "A Red circle and a blue square")
    assert tp.tokens == ["a", "red", "circle", "and", "a", "blue", "square"]
    assert [w.word for w in tp.words] == tp.tokens
    assert [(w.start, w.end) for w in tp.words] == [(i, i + 1) for i in range(7)]
    assert not tp.truncated
    # global-map rows: row 0 is the null slot, so word i is row i + 1
    assert token_merge_indices(tokenizer, tp.tokens, "blue") == [6]
    assert token_merge_indices(tokenizer, tp.tokens, "a") == [1, 5]


def test_unknown_word_is_named(tokenizer: ColourWorldTokenizer) -> None:
    with pytest.raises(ValueError, match="unknown word 'Dog'"):
        tokenizer.tokenize("a red Dog and a blue square")
    with pytest.raises(ValueError, match="unknown word 'purple'"):
        tokenizer.word_ids("a purple circle")


def test_save_and_load(tokenizer: ColourWorldTokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = ColourWorldTokenizer.from_pretrained(tmp_path)
    assert loaded.model_max_length == 9
    assert loaded.get_vocab() == tokenizer.get_vocab()
    text = ALL_PROMPTS[3].text
    assert loaded.word_ids(text) == tokenizer.word_ids(text)
