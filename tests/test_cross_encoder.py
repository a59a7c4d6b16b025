"""Cross-encoder re-ranker on the real e5 weights: it learns a synthetic relevance rule.

Queries are "<colour> <thing>" (English and Chinese); a title is relevant when it names the
same colour and thing. Training sees some (colour, thing) combinations and is tested on others,
so the model must learn to match query words to title words, not memorise queries. One short
run (12 steps of 8 pairs, 32 tokens) is shared by the tests; it takes ~8 s on one idle thread.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from shelfwise.exceptions import ConfigError
from shelfwise.text.cross_encoder import (
    MANIFEST,
    CrossEncoderConfig,
    CrossEncoderScorer,
    base_model,
    encode_pairs,
    read_manifest,
    train_cross_encoder,
)
from shelfwise.text.e5_convert import base_id

EN_COLORS = ["red", "blue", "green", "black", "white", "yellow"]
EN_THINGS = ["running shoes", "coffee mug", "desk lamp", "garden hose", "phone case", "backpack"]
ZH_COLORS = ["红色", "蓝色", "绿色", "黑色"]
ZH_THINGS = ["运动鞋", "咖啡杯", "台灯", "手机壳"]
Labelled = list[tuple[str, str, float]]


def _labelled(queries: list[tuple[str, str, bool]], rng: random.Random) -> Labelled:
    """Per query one relevant title (label 1) and one about another thing (label 0)."""
    out: Labelled = []
    for color, thing, zh in queries:
        colors, things = (ZH_COLORS, ZH_THINGS) if zh else (EN_COLORS, EN_THINGS)
        other, other_color = rng.choice([t for t in things if t != thing]), rng.choice(colors)
        if zh:
            out += [(color + thing, f"{color}{thing} 新款", 1.0),
                    (color + thing, f"{other_color}{other} 新款", 0.0)]
        else:
            out += [(f"{color} {thing}", f"{thing.title()} in {color}", 1.0),
                    (f"{color} {thing}", f"{other.title()} in {other_color}", 0.0)]
    return out


def _split() -> tuple[Labelled, Labelled]:
    rng = random.Random(0)
    queries = [(c, t, False) for c in EN_COLORS for t in EN_THINGS]
    queries += [(c, t, True) for c in ZH_COLORS for t in ZH_THINGS]
    rng.shuffle(queries)
    held, train = queries[:12], queries[12:]
    return _labelled(train, rng) + _labelled(train, rng), _labelled(held, random.Random(1))


TRAIN, HELD_OUT = _split()
CONFIG = CrossEncoderConfig(max_len=32, batch_size=8, lr=2e-4, epochs=5, max_steps=12)


def pairwise_accuracy(scorer: CrossEncoderScorer, labelled: Labelled) -> float:
    """Share of (relevant, irrelevant) pairs of the same query ranked the right way round."""
    scores = scorer.score_pairs([(q, t) for q, t, _ in labelled])
    by_query: dict[str, tuple[list[float], list[float]]] = {}
    for (q, _, y), s in zip(labelled, scores, strict=True):
        by_query.setdefault(q, ([], []))[0 if y == 1.0 else 1].append(float(s))
    right = [p > n for pos, neg in by_query.values() for p in pos for n in neg]
    return float(np.mean(right))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ce") / "model"
    return train_cross_encoder(TRAIN, out, CONFIG, show_progress=False)


@pytest.fixture(scope="module")
def scorer(trained: Path) -> CrossEncoderScorer:
    return CrossEncoderScorer.load(trained)


def test_training_learns_relevance_on_held_out_queries(scorer: CrossEncoderScorer) -> None:
    model, tokenizer = base_model(CONFIG.seed)
    before = pairwise_accuracy(CrossEncoderScorer(model, tokenizer, scorer_id="untrained",
                                                  max_len=32), HELD_OUT)
    after = pairwise_accuracy(scorer, HELD_OUT)
    assert after > 0.9
    assert after > before + 0.2


def test_manifest_and_round_trip(trained: Path, scorer: CrossEncoderScorer) -> None:
    manifest = read_manifest(trained)
    assert manifest["base"] == base_id() and manifest["n_pairs"] == len(TRAIN)
    assert manifest["steps"] == 12 and manifest["pairs_seen"] == 12 * 8
    assert CrossEncoderConfig.from_config(manifest["config"]) == CONFIG
    assert scorer.id == manifest["id"] + "/fp32"
    assert scorer.id.startswith(f"{base_id()}+ce-")
    # the scores the trained model gave before saving, reproduced after loading
    check = manifest["check"]
    assert len(check["pairs"]) == 4
    np.testing.assert_allclose(scorer.score_pairs([tuple(p) for p in check["pairs"]]),
                               check["scores"], atol=1e-4)
    query, texts = "red coffee mug", ["Coffee Mug in red", "Desk Lamp in blue", "红色咖啡杯"]
    scores = scorer.score(query, texts)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, scorer.score(query, texts, batch_size=1), atol=1e-4)
    assert scorer.score(query, []).shape == (0,)


def test_int8_keeps_the_ranking(trained: Path, scorer: CrossEncoderScorer) -> None:
    fp32 = scorer
    int8 = CrossEncoderScorer.load(trained, quantize=True)
    assert int8.id.endswith("/int8")
    pairs = [(q, t) for q, t, _ in HELD_OUT]
    assert np.corrcoef(fp32.score_pairs(pairs), int8.score_pairs(pairs))[0, 1] > 0.98
    assert pairwise_accuracy(int8, HELD_OUT) > 0.9


def test_tampered_directory_is_refused(trained: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "weights.safetensors").symlink_to(trained / "weights.safetensors")
    manifest = read_manifest(trained)
    manifest["check"]["scores"] = [s + 1.0 for s in manifest["check"]["scores"]]
    (copy / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ConfigError, match="does not reproduce"):
        CrossEncoderScorer.load(copy)
    with pytest.raises(ConfigError, match="already holds"):
        train_cross_encoder(TRAIN[:2], trained, CONFIG, show_progress=False)


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([], "at least one"),
        ([("q", "t", 1.5)], "label must be a number in \\[0, 1\\]"),
        ([("q", "t", 1.0), ("q", "u", -0.1)], "pair 1: label"),
        ([("q", "t", float("nan"))], "label"),
        ([("q", "t", "1")], "label"),
        ([("q", 3, 1.0)], "must be str"),
    ],
)
def test_bad_pairs_raise_config_error(pairs: Labelled, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        train_cross_encoder(pairs, tmp_path / "m", CONFIG, show_progress=False)
    assert not (tmp_path / "m").exists()


def test_bad_config_scoring_input_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        CrossEncoderConfig(learning_rate=1e-4)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        CrossEncoderConfig(max_len=4)
    with pytest.raises(ConfigError, match="not a cross-encoder directory"):
        CrossEncoderScorer.load(tmp_path)
    model, tokenizer = base_model()
    scorer = CrossEncoderScorer(model, tokenizer, scorer_id="untrained", max_len=32)
    with pytest.raises(TypeError):
        scorer.score("red shoes", "Red shoes")  # a bare string is not a list of texts


def test_encode_pairs_truncates_the_longer_side() -> None:
    _, tokenizer = base_model()
    long = "cordless drill with two batteries and a charger " * 20
    enc = encode_pairs(tokenizer, ["drill", long], [long, "drill"], 32)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == (2, 32) and mask.sum().item() == 64
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    first = ids[0].tolist()
    assert first[0] == bos and first[-1] == eos and first.count(eos) == 3
    query_part = first[1:first.index(eos)]
    assert tokenizer.decode(query_part).strip() == "query: drill"  # short query kept whole
    second = ids[1].tolist()
    assert second.index(eos) - 1 > 14  # the long query got more than half the budget
    short = encode_pairs(tokenizer, ["drill"], ["drill"], 32)["input_ids"][0].tolist()
    assert short == tokenizer("query: drill", "passage: drill")["input_ids"]
