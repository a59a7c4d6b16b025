"""Zero-shot tagging with real encoders: known answers in Chinese and English, top_k, threshold,
calibration, config round-trip and refused inputs."""

from __future__ import annotations

import numpy as np
import pytest

from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.text import TextEncoder, get_encoder
from shelfwise.text.tagging import ZeroShotConfig, ZeroShotTagger

ZH_LABELS = {
    "手机": ["手机、智能手机、电话", "手机的信号、通话、电池和拍照"],
    "书籍": ["书籍、图书、小说、阅读", "这本书的作者、故事和内容"],
    "水果": ["水果、苹果、橙子、香蕉", "水果新鲜、甜、多汁"],
}
ZH_CASES = [
    ("华为 Mate 60 Pro 5G 智能手机 12GB+512GB 雅川青", "手机"),
    ("电池很耐用，信号也好，拍照清晰", "手机"),
    ("三体（全三册）刘慈欣 科幻小说", "书籍"),
    ("这本书的故事很感人，作者文笔很好", "书籍"),
    ("新疆阿克苏冰糖心苹果 5斤装 新鲜水果", "水果"),
    ("橙子很甜，水分多，非常新鲜", "水果"),
]
EN_LABELS = {
    "phone": "mobile phone, smartphone",
    "book": ["book, novel, reading", "the author and the story of a book"],
    "fruit": "fresh fruit, apples, oranges, bananas",
}
EN_CASES = [
    ("Apple iPhone 15 Pro 256GB smartphone", "phone"),
    ("Great signal and call quality, the battery lasts all day", "phone"),
    ("The Great Gatsby by F. Scott Fitzgerald, paperback", "book"),
    ("A gripping story, I could not put this novel down", "book"),
    ("Organic Honeycrisp apples, 3 lb bag", "fruit"),
    ("The mangoes arrived ripe and sweet", "fruit"),
]


@pytest.fixture(scope="module")
def e5() -> TextEncoder:
    return get_encoder("e5", cache=False, num_threads=1)


@pytest.fixture(scope="module")
def use() -> TextEncoder:
    return get_encoder("use", cache=False, num_threads=1)


@pytest.fixture(scope="module")
def encoders(e5: TextEncoder, use: TextEncoder) -> dict[str, TextEncoder]:
    return {"e5": e5, "use": use}


@pytest.fixture(scope="module")
def zh_vectors(encoders: dict[str, TextEncoder]) -> dict[str, np.ndarray]:
    """The Chinese cases embedded once per encoder (the text path is tested separately)."""
    return {name: enc.encode_items([t for t, _ in ZH_CASES]) for name, enc in encoders.items()}


@pytest.mark.parametrize("label_as", ["query", "passage"])
@pytest.mark.parametrize("aggregate", ["mean", "max"])
@pytest.mark.parametrize("name", ["e5", "use"])
def test_known_answers_chinese(
    encoders: dict[str, TextEncoder],
    zh_vectors: dict[str, np.ndarray],
    name: str,
    aggregate: str,
    label_as: str,
) -> None:
    tagger = ZeroShotTagger(
        encoders[name],
        ZH_LABELS,
        aggregate=aggregate,  # type: ignore[arg-type]
        label_as=label_as,  # type: ignore[arg-type]
    )
    assert tagger.predict_vectors(zh_vectors[name]) == [y for _, y in ZH_CASES]


@pytest.mark.parametrize("name", ["e5", "use", "minilm"])
def test_known_answers_english(encoders: dict[str, TextEncoder], name: str) -> None:
    encoder = encoders.get(name) or get_encoder(name, cache=False, num_threads=1)
    tagger = ZeroShotTagger(encoder, EN_LABELS)
    assert tagger.predict([t for t, _ in EN_CASES]) == [y for _, y in EN_CASES]


def test_calibrated_known_answers(e5: TextEncoder, zh_vectors: dict[str, np.ndarray]) -> None:
    vecs = zh_vectors["e5"]
    tagger = ZeroShotTagger(e5, ZH_LABELS, calibrate=True)
    with pytest.raises(NotFittedError):
        tagger.predict_vectors(vecs)
    tagger.fit_vectors(vecs)
    assert tagger.bias_.shape == (3,)
    np.testing.assert_allclose(tagger.bias_, tagger.raw_scores(vecs).mean(axis=0), rtol=1e-6)
    assert tagger.predict_vectors(vecs) == [y for _, y in ZH_CASES]
    np.testing.assert_allclose(
        tagger.score_vectors(vecs), tagger.raw_scores(vecs) - tagger.bias_, rtol=1e-6
    )


def test_top_k_and_threshold(use: TextEncoder, zh_vectors: dict[str, np.ndarray]) -> None:
    texts = [t for t, _ in ZH_CASES]
    vecs = zh_vectors["use"]
    all3 = ZeroShotTagger(use, ZH_LABELS, top_k=3).tag_vectors(vecs)
    assert [len(tags) for tags in all3] == [3] * len(texts)
    for tags, (_, answer) in zip(all3, ZH_CASES, strict=True):
        scores = [s for _, s in tags]
        assert scores == sorted(scores, reverse=True)
        assert {lab for lab, _ in tags} == set(ZH_LABELS)
        assert tags[0][0] == answer
    # top_k beyond the number of labels is capped; the default gives the argmax only
    assert ZeroShotTagger(use, ZH_LABELS, top_k=10).tag_vectors(vecs) == all3
    top1 = ZeroShotTagger(use, ZH_LABELS).tag_vectors(vecs)
    assert top1 == [tags[:1] for tags in all3]

    # a threshold keeps, of the top_k, exactly the tags scoring at least it (possibly none)
    thr = (all3[0][0][1] + all3[0][1][1]) / 2  # between the first text's best and second
    kept = ZeroShotTagger(use, ZH_LABELS, top_k=3, threshold=thr).tag_vectors(vecs)
    assert kept == [[t for t in tags if t[1] >= thr] for tags in all3]
    assert kept[0] == all3[0][:1]
    none = ZeroShotTagger(use, ZH_LABELS, top_k=3, threshold=1.01)
    assert none.tag_vectors(vecs) == [[] for _ in texts]
    # predict is the argmax whatever the threshold
    assert none.predict_vectors(vecs) == [y for _, y in ZH_CASES]


def test_text_and_vector_paths_agree(e5: TextEncoder, zh_vectors: dict[str, np.ndarray]) -> None:
    texts = [t for t, _ in ZH_CASES]
    tagger = ZeroShotTagger(e5, ZH_LABELS, top_k=2)
    assert tagger.tag(texts) == tagger.tag_vectors(zh_vectors["e5"])
    assert tagger.predict(texts) == [y for _, y in ZH_CASES]
    assert ZeroShotTagger(e5, ZH_LABELS, calibrate=True).fit(texts).predict(texts) == [
        y for _, y in ZH_CASES
    ]
    assert tagger.tag([]) == []
    with pytest.raises(TypeError):
        tagger.tag("一个字符串")  # a bare string is not a list of texts


def test_max_aggregation_is_best_description(
    use: TextEncoder, zh_vectors: dict[str, np.ndarray]
) -> None:
    vecs = zh_vectors["use"]
    tagger = ZeroShotTagger(use, ZH_LABELS, aggregate="max")
    for j, descs in enumerate(ZH_LABELS.values()):
        expected = (vecs @ use.encode_queries(descs).T).max(axis=1)
        np.testing.assert_allclose(tagger.raw_scores(vecs)[:, j], expected, rtol=1e-5)
    # with one description per label the two aggregations coincide
    single = {k: v[0] for k, v in ZH_LABELS.items()}
    mean = ZeroShotTagger(use, single, aggregate="mean").raw_scores(vecs)
    best = ZeroShotTagger(use, single, aggregate="max").raw_scores(vecs)
    np.testing.assert_allclose(mean, best, rtol=1e-5)


def test_config_round_trip(use: TextEncoder) -> None:
    tagger = ZeroShotTagger(use, ZH_LABELS, top_k=2, threshold=0.1, aggregate="max")
    data = tagger.to_config()
    assert data["labels"] == ZH_LABELS and data["top_k"] == 2 and data["aggregate"] == "max"
    again = ZeroShotTagger.from_config(ZeroShotConfig.from_config(data), use)
    assert again.to_config() == data
    assert again.labels == ("手机", "书籍", "水果")
    texts = [t for t, _ in ZH_CASES]
    assert again.tag(texts) == tagger.tag(texts)
    with pytest.raises(ValueError):
        ZeroShotConfig.from_config({**data, "unknown": 1})


@pytest.mark.parametrize(
    "labels",
    [{}, {"手机": []}, {"手机": ""}, {"手机": ["手机", "  "]}, {"": "手机"}],
    ids=["no-labels", "no-descriptions", "empty-description", "blank-description", "no-name"],
)
def test_empty_labels_are_refused(use: TextEncoder, labels: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ZeroShotTagger(use, labels)  # type: ignore[arg-type]


def test_bad_options_and_inputs(use: TextEncoder) -> None:
    with pytest.raises(ConfigError):
        ZeroShotTagger(use, ZH_LABELS, top_k=0)
    with pytest.raises(ConfigError):
        ZeroShotTagger(use, ZH_LABELS, label_as="document")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ZeroShotTagger(use, ZH_LABELS, threshold=float("nan"))
    tagger = ZeroShotTagger(use, ZH_LABELS, calibrate=True)
    with pytest.raises(ValueError):
        tagger.fit([])
    with pytest.raises(ValueError):
        tagger.raw_scores(np.zeros((2, use.dim + 1), np.float32))
