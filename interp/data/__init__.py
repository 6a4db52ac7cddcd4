"""Text sources and fixed-length token windows: ``text_sources`` (:class:`TextSource`, the split rule,
the stdlib's counts), ``readers`` (per-format readers, file resolution, Hugging Face datasets) and
``tokens`` (packing documents into token windows and batches)."""

from interp.data.readers import SUPPORTED_SUFFIXES, TEXT_SUFFIXES
from interp.data.text_sources import (
    SPLIT_RULE,
    SPLITS,
    TextSource,
    count_stdlib_bytes,
    in_validation,
    iter_documents,
    stdlib_info,
)
from interp.data.tokens import token_batches, token_windows

__all__ = [
    "SPLITS",
    "SPLIT_RULE",
    "TEXT_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TextSource",
    "in_validation",
    "iter_documents",
    "token_windows",
    "token_batches",
    "count_stdlib_bytes",
    "stdlib_info",
]
