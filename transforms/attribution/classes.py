"""Segmentation classes named in a prompt: a class vocabulary and the words of a row that match it.

A ``ClassVocabulary`` orders K classes (label 0 is background, labels 1..K the classes) and may
give each class synonyms. ``match_classes`` finds, in a dataset row's ``words`` column, every run
of words naming a class, with the row word rule of ``words.word_runs`` (the project's one word
matcher), so a class matches whole CLIP words only:

- a name or synonym of several words ("potted plant") matches the same words in a row, in order;
  punctuation is a word of its own, so nothing matches across it ("hot, dog" is not "hot dog");
- a name matches inside no other word: "cat" is not in "caterpillar", "dog" is not in "hotdog";
- the last word of a name or synonym may take a regular plural (``plural_forms``: -s, -es,
  -ies for -y); irregular plurals ("people", "mice", "knives") are listed as synonyms;
- names, synonyms and words compare lower-cased;
- where matches overlap the one of most words wins ("hot dog" over "dog"); among equally long
  ones the earlier start, then a listed phrase over a generated plural;
- every occurrence is reported, in prompt order.

Each ``ClassMatch`` carries the class label and name, the matched text, its word span and its token
span ``[start, end)``: the class map is the mean of ``token_maps`` over the token rows of all its
matches (``class_token_rows``).

Class lists are text files, one class a line in label order; ``#`` starts a comment and blank lines
are ignored; a leading ``background`` line is skipped. Synonym files hold ``class: synonym,
synonym, ...`` lines with the same comment rule. VOC's 20 and COCO's 80 classes are shipped with
default synonyms (``transforms/assets/classes``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .words import Span, split_words, word_runs, word_spellings

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

BACKGROUND_NAME = "background"
SHIPPED = ("voc", "coco", "colours")  # colours: the colour words of --model colour-world
Units = tuple[str, ...]
_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")
_VOWELS = "aeiou"


def plural_forms(word: str) -> tuple[str, ...]:
    """Regular English plurals of a lower-cased ``word``: ``-ies`` for a consonant + ``y``,
    ``-es`` after s/x/z/ch/sh, ``-s`` and ``-es`` after ``o``, else ``-s``; none unless letters."""
    if not word.isalpha():
        return ()
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return (word[:-1] + "ies",)
    if word.endswith(_SIBILANT_ENDINGS):
        return (word + "es",)
    if word.endswith("o"):
        return (word + "s", word + "es")
    return (word + "s",)


def phrase_units(text: str) -> Units:
    """``text`` as the CLIP words it must match (``split_words``); ``ValueError`` if it has none."""
    units = tuple(split_words(text))
    if not units:
        raise ValueError(f"class name or synonym {text!r} has no words")
    return units


@dataclass(frozen=True)
class ClassVocabulary:
    """Segmentation classes: label 0 is background, label ``i`` is ``names[i - 1]`` (1..K).

    ``synonyms`` maps a class name to other words or phrases for it. Names and synonyms compare as
    CLIP words (lower-cased, punctuation apart); each belongs to one class only, and a name listed
    twice (or ``background``) is refused with ``ValueError``. Plain data: it pickles.
    """

    names: tuple[str, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _phrases: Mapping[Units, tuple[int, bool]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(name).strip() for name in self.names)
        if not names:
            raise ValueError("a class vocabulary needs at least one class")
        by_units: dict[Units, str] = {}
        for name in names:
            units = phrase_units(name)
            if units == (BACKGROUND_NAME,):
                raise ValueError(f"{BACKGROUND_NAME!r} is label 0; list the classes 1..K only")
            if units in by_units:
                raise ValueError(f"class {name!r} is listed twice")
            by_units[units] = name
        synonyms: dict[str, tuple[str, ...]] = {}
        for key, values in self.synonyms.items():
            name = by_units.get(phrase_units(key))
            if name is None:
                raise ValueError(f"synonyms given for {key!r}, not a class of {list(names)}")
            values = (values,) if isinstance(values, str) else values
            synonyms[name] = synonyms.get(name, ()) + tuple(str(v).strip() for v in values)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "synonyms", synonyms)
        object.__setattr__(self, "_phrases", self._phrase_table())

    def _phrase_table(self) -> dict[Units, tuple[int, bool]]:
        """Every phrase a class matches -> (label, is a generated plural); listed phrases first."""
        table: dict[Units, tuple[int, bool]] = {}
        for label, name in enumerate(self.names, start=1):
            for phrase in (name, *self.synonyms.get(name, ())):
                units = phrase_units(phrase)
                other = table.setdefault(units, (label, False))[0]
                if other != label:
                    raise ValueError(
                        f"{phrase!r} names two classes: {self.names[other - 1]!r} and {name!r}"
                    )
        for units, (label, _) in list(table.items()):
            for plural in plural_forms(units[-1]):
                table.setdefault(units[:-1] + (plural,), (label, True))
        return table

    @property
    def labels(self) -> tuple[str, ...]:
        """The label names, index = label: background first, then the classes."""
        return (BACKGROUND_NAME, *self.names)

    @property
    def num_classes(self) -> int:
        """K, the number of classes (background not counted)."""
        return len(self.names)

    @property
    def phrases(self) -> Mapping[Units, tuple[int, bool]]:
        """Every phrase matched (as CLIP words) -> (its label, whether it is a generated plural)."""
        return MappingProxyType(self._phrases)

    def label(self, text: str) -> int:
        """The label (1..K) of a class name, a synonym or a plural of one; ``KeyError`` if none."""
        found = self._phrases.get(tuple(split_words(text)))
        if found is None:
            raise KeyError(f"{text!r} names no class of {list(self.names)}")
        return found[0]

    def name(self, label: int) -> str:
        """The name of ``label`` (0 is ``background``)."""
        if not 0 <= label <= self.num_classes:
            raise IndexError(f"label {label} is not in 0..{self.num_classes}")
        return self.labels[label]


@dataclass(frozen=True)
class ClassMatch:
    """A class named in a prompt: its label and name, the words that name it (joined by spaces),
    their word span in the row's ``words`` and their token span ``[start, end)`` in ``tokens``."""

    label: int
    name: str
    text: str
    word_span: Span
    token_span: Span

    @property
    def token_rows(self) -> list[int]:
        """The rows of ``token_maps`` this match covers."""
        return list(range(*self.token_span))


def match_classes(
    words: Sequence[Mapping[str, Any]],
    vocabulary: ClassVocabulary,
    tokens: Sequence[str] | None = None,
) -> list[ClassMatch]:
    """Every class named in a row's ``words`` entries (``{"word", "start", "end"}``), in prompt
    order; overlapping matches resolved longest first (the rules are in the module docstring).

    ``tokens`` (the row's ``tokens``) lets a word also match by its joined tokens, as
    ``words.word_spans`` does.
    """
    spellings = word_spellings(words, tokens)
    present = {spelling for pair in spellings for spelling in pair}
    found: list[tuple[int, int, bool, int]] = []
    for units, (label, plural) in vocabulary.phrases.items():
        if present.issuperset(units):
            found += [(start, end, plural, label) for start, end in word_runs(spellings, units)]
    found.sort(key=lambda f: (f[0] - f[1], f[0], f[2], f[3]))
    taken: set[int] = set()
    kept: list[tuple[int, int, int]] = []
    for start, end, _, label in found:
        if taken.isdisjoint(range(start, end)):
            taken.update(range(start, end))
            kept.append((start, end, label))
    return [
        ClassMatch(
            label=label,
            name=vocabulary.name(label),
            text=" ".join(str(words[i]["word"]).strip() for i in range(start, end)),
            word_span=(start, end),
            token_span=(int(words[start]["start"]), int(words[end - 1]["end"])),
        )
        for start, end, label in sorted(kept)
    ]


def class_token_rows(matches: Iterable[ClassMatch]) -> dict[int, list[int]]:
    """Label -> the token rows of all its matches, in prompt order: the class map is the mean of
    ``token_maps[rows]`` (DAAM merges repeated words the same way)."""
    rows: dict[int, list[int]] = {}
    for match in matches:
        rows.setdefault(match.label, []).extend(match.token_rows)
    return rows


def append_class_prompt(prompt: str, classes: Iterable[str], separator: str = " ") -> str:
    """``prompt`` with class names appended after ``"; "``, joined by ``separator``.

    Dataset Diffusion's class-prompt appending, in the form of its released prompt files
    (``"a woman running with a dog; person dog"``); ``separator=", "`` gives
    ``"...; person, dog"``. No classes: ``prompt`` unchanged.
    """
    names = [str(name).strip() for name in classes if str(name).strip()]
    if not names:
        return prompt
    return f"{prompt.rstrip()}; {separator.join(names)}"


# -- class and synonym files ---------------------------------------------------------------------
def _content_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, content) of each line with a ``#`` comment removed, blank lines skipped."""
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            yield number, content


def read_class_names(text: str, origin: str = "<classes>") -> tuple[str, ...]:
    """Class names of a class file's ``text`` in label order (1..K); a first ``background`` line is
    skipped. ``ValueError`` naming ``origin`` and the line for a repeated name or a later
    ``background``."""
    names: list[str] = []
    first_line: dict[Units, int] = {}
    for number, name in _content_lines(text):
        units = phrase_units(name)
        if units == (BACKGROUND_NAME,):
            if not names and not first_line:
                first_line[units] = number
                continue
            raise ValueError(f"{origin}:{number}: {BACKGROUND_NAME!r} may only be the first line")
        if units in first_line:
            raise ValueError(f"{origin}:{number}: class {name!r} repeats line {first_line[units]}")
        first_line[units] = number
        names.append(name)
    if not names:
        raise ValueError(f"{origin}: no classes")
    return tuple(names)


def read_synonyms(
    text: str, names: Sequence[str], origin: str = "<synonyms>"
) -> dict[str, tuple[str, ...]]:
    """Synonyms of a synonym file's ``text`` (``class: synonym, synonym, ...`` lines) for classes
    ``names``. ``ValueError`` naming ``origin`` and the line for a line without ``:``, a class not
    in ``names`` or a class given twice."""
    known = {phrase_units(name): name for name in names}
    synonyms: dict[str, tuple[str, ...]] = {}
    seen: dict[str, int] = {}
    for number, content in _content_lines(text):
        key, colon, values = content.partition(":")
        if not colon:
            raise ValueError(
                f"{origin}:{number}: expected 'class: synonym, synonym, ...', got {content!r}"
            )
        name = known.get(tuple(split_words(key)))
        if name is None:
            raise ValueError(f"{origin}:{number}: {key.strip()!r} is not a class of {list(names)}")
        if name in seen:
            raise ValueError(f"{origin}:{number}: class {name!r} repeats line {seen[name]}")
        seen[name] = number
        synonyms[name] = tuple(v.strip() for v in values.split(",") if v.strip())
    return synonyms


def shipped_file(name: str, synonyms: bool = False) -> Traversable:
    """The shipped class list (``voc``, ``coco``) or its default synonym file."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped class list {name!r}; shipped: {', '.join(SHIPPED)}")
    suffix = ".synonyms.txt" if synonyms else ".txt"
    return resources.files("transforms").joinpath("assets", "classes", name + suffix)


def load_vocabulary(
    source: str | os.PathLike[str] = "voc", synonyms: str | os.PathLike[str] | None = None
) -> ClassVocabulary:
    """A vocabulary from a shipped list (a string ``"voc"`` or ``"coco"``) or a class file at
    ``source``.

    ``synonyms``: a synonym file that replaces the default ones (the shipped list's own, or none for
    a user file); copy ``shipped_file(name, synonyms=True)`` to extend the shipped synonyms.
    """
    if isinstance(source, str) and source in SHIPPED:
        class_file: Traversable | Path = shipped_file(source)
        synonym_file: Traversable | Path | None = shipped_file(source, synonyms=True)
    else:
        class_file, synonym_file = Path(source), None
        if not class_file.is_file():
            shipped = ", ".join(SHIPPED)
            raise FileNotFoundError(f"class list {str(source)!r}: no such file (shipped: {shipped})")
    if synonyms is not None:
        synonym_file = Path(synonyms)
    names = read_class_names(class_file.read_text(encoding="utf-8"), str(class_file))
    if synonym_file is None:
        return ClassVocabulary(names)
    table = read_synonyms(synonym_file.read_text(encoding="utf-8"), names, str(synonym_file))
    return ClassVocabulary(names, table)
