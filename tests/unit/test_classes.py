"""Segmentation classes: vocabularies, class files and matching a row's words to classes."""

from __future__ import annotations

import pickle

import pytest

from transforms.attribution.classes import (
    ClassVocabulary,
    append_class_prompt,
    class_token_rows,
    load_vocabulary,
    match_classes,
    plural_forms,
    read_class_names,
    read_synonyms,
    shipped_file,
)
from transforms.attribution.words import token_spans, tokenize_prompt
from transforms.models.tiny_sd import build_clip_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_clip_tokenizer()


@pytest.fixture(scope="module")
def voc():
    return load_vocabulary("voc")


@pytest.fixture(scope="module")
def coco():
    return load_vocabulary("coco")


def row_words(tokenizer, prompt):
    """A row's ``words`` column for ``prompt``, as the pipeline writes it."""
    return [{"word": w.word, "start": w.start, "end": w.end} for w in tokenize_prompt(tokenizer, prompt).words]


def load_vocabulary_of(names):
    return ClassVocabulary(tuple(names))


def found(tokenizer, prompt, vocabulary):
    return [(m.name, m.text) for m in match_classes(row_words(tokenizer, prompt), vocabulary)]


# -- shipped lists -------------------------------------------------------------------------------
VOC_CANONICAL = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor"
).split()


def test_shipped_lists_have_20_and_80_distinct_classes(voc, coco):
    assert voc.num_classes == 20 and coco.num_classes == 80
    assert len(set(voc.names)) == 20 and len(set(coco.names)) == 80
    assert voc.labels[0] == coco.labels[0] == "background"
    assert voc.names[10] == "dining table" and voc.names[-1] == "tv monitor"
    assert coco.names[:3] == ("person", "bicycle", "car") and coco.names[-1] == "toothbrush"
    assert coco.label("hot dog") == 53 and coco.name(53) == "hot dog"


def test_voc_canonical_spellings_are_kept_in_label_order(voc):
    assert [voc.label(name) for name in VOC_CANONICAL] == list(range(1, 21))


def test_vocabulary_pickles(coco):
    copy = pickle.loads(pickle.dumps(coco))
    assert copy == coco and copy.phrases == coco.phrases and copy.label("mice") == coco.label("mouse")


def test_shipped_files_are_package_data():
    assert shipped_file("voc").is_file() and shipped_file("coco", synonyms=True).is_file()
    with pytest.raises(ValueError, match="no shipped class list 'ade'"):
        shipped_file("ade")


# -- matching ------------------------------------------------------------------------------------
def test_multi_word_classes_match_contiguous_words(tokenizer, coco, voc):
    assert found(tokenizer, "a potted plant on a dining table by a traffic light", coco) == [
        ("potted plant", "potted plant"), ("dining table", "dining table"), ("traffic light", "traffic light"),
    ]
    assert found(tokenizer, "a plant potted on a table for dining", voc) == []


def test_regular_plurals(tokenizer, coco):
    assert found(tokenizer, "two dogs, three buses and some teddy bears", coco) == [
        ("dog", "dogs"), ("bus", "buses"), ("teddy bear", "teddy bears"),
    ]
    plain = load_vocabulary_of(["sandwich", "strawberry", "puppy"])
    assert found(tokenizer, "sandwiches, strawberries and puppies", plain) == [
        ("sandwich", "sandwiches"), ("strawberry", "strawberries"), ("puppy", "puppies"),
    ]
    assert plural_forms("toy") == ("toys",) and plural_forms("tomato") == ("tomatos", "tomatoes")
    assert plural_forms(",") == ()


def test_irregular_plurals_and_synonyms(tokenizer, coco, voc):
    assert found(tokenizer, "people with knives chasing mice", coco) == [
        ("person", "people"), ("knife", "knives"), ("mouse", "mice"),
    ]
    assert found(tokenizer, "puppies on a couch watching television", voc) == [
        ("dog", "puppies"), ("sofa", "couch"), ("tv monitor", "television"),
    ]
    assert found(tokenizer, "a man on a motorcycle", voc) == [("person", "man"), ("motorbike", "motorcycle")]
    assert found(tokenizer, "a woman on a couch", coco) == [("person", "woman"), ("couch", "couch")]


def test_longest_match_wins(tokenizer, coco):
    assert found(tokenizer, "a hot dog", coco) == [("hot dog", "hot dog")]
    assert found(tokenizer, "a dog eating hot dogs", coco) == [("dog", "dog"), ("hot dog", "hot dogs")]


def test_word_both_class_and_part_of_multi_word_class(tokenizer, coco):
    assert found(tokenizer, "a bear holding a teddy bear", coco) == [("bear", "bear"), ("teddy bear", "teddy bear")]
    plants = load_vocabulary_of(["plant", "potted plant"])
    assert found(tokenizer, "a potted plant next to a plant", plants) == [
        ("potted plant", "potted plant"), ("plant", "plant"),
    ]


def test_no_match_inside_another_word(tokenizer, voc, coco):
    assert found(tokenizer, "a caterpillar in a category of hotdogs", voc) == []
    assert found(tokenizer, "a hotdog", coco) == [("hot dog", "hotdog")]  # a synonym, not "dog"
    words = [{"word": "caterpillar", "start": 0, "end": 2}]
    assert match_classes(words, voc, tokens=["cater", "pillar"]) == []


def test_punctuation_is_a_word_of_its_own(tokenizer, voc, coco):
    assert found(tokenizer, "a dog, a cat. a cow!", voc) == [("dog", "dog"), ("cat", "cat"), ("cow", "cow")]
    assert found(tokenizer, "something hot, dog", coco) == [("dog", "dog")]  # not across the comma
    assert found(tokenizer, "a teddy. bear", coco) == [("teddy bear", "teddy"), ("bear", "bear")]  # two


def test_every_occurrence_in_prompt_order(tokenizer, voc):
    matches = match_classes(row_words(tokenizer, "a dog and a cat and a dog and dogs"), voc)
    assert [(m.name, m.word_span) for m in matches] == [
        ("dog", (1, 2)), ("cat", (4, 5)), ("dog", (7, 8)), ("dog", (9, 10)),
    ]
    assert class_token_rows(matches) == {12: [1, 7, 9], 8: [4]}


def test_case_does_not_matter(tokenizer):
    vocabulary = ClassVocabulary(("TV Monitor", "Dog"), {"dog": ["Puppy"]})
    assert found(tokenizer, "A DOG, a Puppy and a tv MONITOR", vocabulary) == [
        ("Dog", "dog"), ("Dog", "puppy"), ("TV Monitor", "tv monitor"),
    ]
    words = [{"word": "Dogs", "start": 0, "end": 1}]
    assert [m.name for m in match_classes(words, vocabulary)] == ["Dog"]
    assert vocabulary.label("tv monitors") == 1


def test_token_spans_follow_the_rows_words(tokenizer, coco):
    prompt = "a giraffe with a hairdryer, two hot dogs and a pottedplant"
    t = tokenize_prompt(tokenizer, prompt)
    words = row_words(tokenizer, prompt)
    matches = match_classes(words, coco)
    assert [m.name for m in matches] == ["giraffe", "hair drier", "hot dog", "potted plant"]
    for m in matches:
        first, last = words[m.word_span[0]], words[m.word_span[1] - 1]
        assert m.token_span == (first["start"], last["end"])
        assert m.token_span in token_spans(tokenizer, t.tokens, m.text)  # DAAM's matcher agrees
        assert m.token_rows == list(range(*m.token_span))
    assert any(m.token_span[1] - m.token_span[0] > m.word_span[1] - m.word_span[0] for m in matches)  # multi-token word


def test_class_prompt_appending(tokenizer, voc):
    prompt = append_class_prompt("a woman running down a road with a dog ", ["person", "dog"])
    assert prompt == "a woman running down a road with a dog; person dog"
    assert append_class_prompt("a dog on a sofa", ["dog", "sofa"], separator=", ") == "a dog on a sofa; dog, sofa"
    assert append_class_prompt("a road", []) == "a road"
    assert [m.name for m in match_classes(row_words(tokenizer, prompt), voc)] == ["person", "dog", "person", "dog"]


# -- vocabularies and files ----------------------------------------------------------------------
def test_vocabulary_refuses_ambiguous_definitions():
    with pytest.raises(ValueError, match="class 'dog' is listed twice"):
        ClassVocabulary(("Dog", "dog"))
    with pytest.raises(ValueError, match="'couch' names two classes: 'sofa' and 'bench'"):
        ClassVocabulary(("sofa", "bench"), {"sofa": ["couch"], "bench": ["couch"]})
    with pytest.raises(ValueError, match="synonyms given for 'cat', not a class"):
        ClassVocabulary(("dog",), {"cat": ["kitten"]})
    with pytest.raises(ValueError, match="'background' is label 0"):
        ClassVocabulary(("background", "dog"))
    with pytest.raises(ValueError, match="has no words"):
        ClassVocabulary(("dog", "  "))
    with pytest.raises(KeyError, match="'cat' names no class"):
        load_vocabulary_of(["dog"]).label("cat")


def test_listed_phrase_beats_a_generated_plural(tokenizer):
    vocabulary = ClassVocabulary(("glass", "glasses"))  # a drinking glass, eyeglasses
    assert found(tokenizer, "glasses on a glass", vocabulary) == [("glasses", "glasses"), ("glass", "glass")]


def test_user_class_file(tmp_path, tokenizer):
    classes = tmp_path / "classes.txt"
    classes.write_text("background\n# animals\ncat  # felines\n\nguinea pig\n", encoding="utf-8")
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("# class: synonyms\nguinea pig: cavy, cavies\ncat: kitty\n", encoding="utf-8")
    vocabulary = load_vocabulary(classes, synonyms=synonyms)
    assert vocabulary.labels == ("background", "cat", "guinea pig")
    assert found(tokenizer, "two cavies and a kitty", vocabulary) == [("guinea pig", "cavies"), ("cat", "kitty")]
    assert load_vocabulary(str(classes)).synonyms == {}


def test_user_synonyms_replace_the_shipped_ones(tmp_path, tokenizer):
    synonyms = tmp_path / "voc-synonyms.txt"
    synonyms.write_text("sofa: settee\n", encoding="utf-8")
    vocabulary = load_vocabulary("voc", synonyms=synonyms)
    assert found(tokenizer, "a settee, a couch", vocabulary) == [("sofa", "settee")]


def test_class_file_errors_name_the_line(tmp_path):
    with pytest.raises(ValueError, match=r"classes.txt:4: class 'Dog' repeats line 2"):
        read_class_names("# pets\ndog\ncat\nDog\n", "classes.txt")
    with pytest.raises(ValueError, match=r"c.txt:2: 'background' may only be the first line"):
        read_class_names("dog\nbackground\n", "c.txt")
    with pytest.raises(ValueError, match=r"c.txt: no classes"):
        read_class_names("# nothing\n\n", "c.txt")
    path = tmp_path / "dup.txt"
    path.write_text("dog\ncat\n\ndog\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dup.txt:4: class 'dog' repeats line 1"):
        load_vocabulary(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_vocabulary(tmp_path / "missing.txt")


def test_synonym_file_errors_name_the_line():
    with pytest.raises(ValueError, match=r"s.txt:2: expected 'class: synonym"):
        read_synonyms("dog: puppy\ncat kitten\n", ["dog", "cat"], "s.txt")
    with pytest.raises(ValueError, match=r"s.txt:1: 'cow' is not a class"):
        read_synonyms("cow: calf\n", ["dog"], "s.txt")
    with pytest.raises(ValueError, match=r"s.txt:3: class 'dog' repeats line 1"):
        read_synonyms("dog: puppy\n\nDog: hound\n", ["dog"], "s.txt")
    assert read_synonyms("dog: puppy, , hound  # more\n", ["dog"]) == {"dog": ("puppy", "hound")}
