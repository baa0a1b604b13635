"""Former home of the corpus reader, now ``transforms.corpus``; kept for the modules that still import it."""

from .corpus import (
    SUPPORTED_FORMATS,
    ColumnNames,
    Corpus,
    CorpusError,
    PromptRecord,
    ReadFailure,
    content_id,
    derive_seed,
    read_corpus,
)

__all__ = [
    "SUPPORTED_FORMATS", "ColumnNames", "Corpus", "CorpusError", "PromptRecord", "ReadFailure",
    "content_id", "derive_seed", "read_corpus",
]
