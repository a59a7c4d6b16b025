"""The two-stage feed: candidates from several generators → features → LambdaMART.

:class:`Pipeline` is itself a :class:`~shelfwise.retrieval.base.CandidateGenerator`
(``fit(Interactions)``, ``score(histories)`` over all items), so ``recommend``, ``evaluate`` and
``evaluate_sampled`` treat it like any generator. Training respects time: each user's last
interaction of the fitted log is held out as the ranker's target and the generators are fitted
on the rest, so the ranker learns from candidates produced exactly as they will be when
serving (a model that never saw the next item). Then the generators are refitted on the whole
log for serving. With too few usable held-out users, the pipeline serves the heuristic blend
(:func:`shelfwise.retrieval.blend.blend_scores`) instead, and says so in :attr:`Pipeline.report_`.

Cold items (fewer than ``COLD_BELOW`` training interactions, and items posted after training,
which a text generator scores once :meth:`Pipeline.add_items` embedded them) can get a
candidate quota per generator (``GeneratorSpec.cold_candidates``: its best cold items), the
cold items sharing the most words with the history (``PipelineConfig.cold_words``) and a score
boost (``PipelineConfig.cold_boost``); features read every item index, trained or not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shelfwise.data.interactions import History, Interactions
from shelfwise.evaluation.splitters import EvalSet, LeaveLastOut
from shelfwise.exceptions import ConfigError, NotFittedError
from shelfwise.ranking.config import GeneratorSpec, PipelineConfig
from shelfwise.ranking.features import (
    COLD_BELOW,
    COLD_SUFFIX,
    LEX_COLD,
    TEXT_HISTORY,
    Candidates,
    FeatureSpec,
    ItemStats,
    merge_candidates,
)
from shelfwise.ranking.lexical import LEXICAL_FEATURES, TitleTerms
from shelfwise.ranking.ranker import LambdaMART
from shelfwise.retrieval.base import BaseGenerator, Scores, top_k
from shelfwise.retrieval.blend import blend_scores, coordinate_weights
from shelfwise.retrieval.registry import load_generator, make_generator
from shelfwise.retrieval.semantic import Semantic

__all__ = ["GeneratorSpec", "Pipeline", "PipelineConfig"]

Mode = Literal["ranker", "blend"]
GAP = 1.0
"""Non-candidates score at most ``-GAP`` (blend in [0, 1] shifted down by 1 + GAP), candidates
at least 0: every candidate ranks above every other item, and both parts keep a total order."""


class _Stage:
    """What training the second stage needs, kept for :meth:`Pipeline.refit_ranker`."""

    def __init__(self, data: Interactions, holdout: EvalSet,
                 generators: dict[str, BaseGenerator]) -> None:
        self.data, self.holdout, self.generators = data, holdout, generators


class Pipeline:
    """Candidate generators → merged candidates → features → LambdaMART, from one config.

    ``item_categories`` (one int per item index, -1 = none) enables the category features;
    ``keep_inner`` keeps the inner generators after ``fit`` so :meth:`refit_ranker` can try
    other second-stage settings without refitting them.
    """

    name: ClassVar[str] = "pipeline"

    def __init__(self, config: PipelineConfig | Mapping[str, Any], *,
                 item_categories: ArrayLike | None = None, keep_inner: bool = False) -> None:
        self.config = (config if isinstance(config, PipelineConfig)
                       else PipelineConfig.from_dict(config))
        self.item_categories = (None if item_categories is None
                                else np.asarray(item_categories, dtype=np.int64).reshape(-1))
        self.keep_inner = keep_inner
        self.generators_: dict[str, BaseGenerator] = {}
        self.ranker_: LambdaMART | None = None
        self.weights_: dict[str, float] = {}
        self.mode_: Mode | None = None
        self.stats_: ItemStats | None = None
        self.lexical_: TitleTerms | None = None
        """The items' hashed words (features ``lex_*``); None without item texts."""
        self.report_: dict[str, Any] = {}
        self.shared_: dict[str, str] = {}
        """Generators reused from the bundle: pipeline key -> bundle generator key."""
        self._inner: _Stage | None = None

    # ---- protocol --------------------------------------------------------------------------
    @property
    def n_items_(self) -> int:
        if not self.generators_:
            raise NotFittedError("Pipeline is not fitted; call fit() or Pipeline.load()")
        return self._width(self.generators_)

    def _width(self, gens: Mapping[str, BaseGenerator]) -> int:
        """Items scored: every generator's, and with ``cold_words`` every item with words
        (a posted item is a candidate through them even when no generator embeds it)."""
        n = max(g.n_items_ for g in gens.values())
        if self.config.cold_words and self.lexical_ is not None:
            n = max(n, self.lexical_.n_items)
        return n

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump(mode="json")}

    def fit(self, data: Interactions, *,
            fitted: Sequence[tuple[GeneratorSpec, BaseGenerator]] = ()) -> Self:
        """Hold out each user's last interaction, fit the generators on the rest, train the
        ranker on the held-out users' candidates, then refit the generators on all of ``data``.

        ``fitted`` are generators already fitted on all of ``data`` (the bundle's): a pipeline
        generator with the same name and params reuses one instead of fitting a copy, and is
        saved by reference (:meth:`save` ``shared``)."""
        if data.n_items == 0:
            raise ConfigError("cannot fit the pipeline: the data has no items")
        if self.item_categories is not None and self.item_categories.shape[0] != data.n_items:
            raise ConfigError(f"item_categories has {self.item_categories.shape[0]} entries but "
                              f"the data has {data.n_items} items; give one per item index")
        start = time.perf_counter()
        self.lexical_ = self._lexical(data)
        split = LeaveLastOut().split(data)
        inner, seconds_inner = self._fit_generators(split.train)
        stage = _Stage(split.train, split.test, inner)
        t_stage = time.perf_counter()
        report = self._train_second_stage(stage)
        report["seconds_second_stage"] = round(time.perf_counter() - t_stage, 3)
        self.generators_, seconds = self._fit_generators(data, fitted)
        self.stats_ = self._item_stats(data)
        self._inner = stage if self.keep_inner else None
        self.report_ = {**report, "generator_fit_seconds_inner": seconds_inner,
                        "generator_fit_seconds": seconds,
                        "seconds_total": round(time.perf_counter() - start, 3)}
        return self

    def refit_ranker(self, config: PipelineConfig | Mapping[str, Any]) -> Self:
        """Retrain only the second stage under ``config`` (same generators, other candidate
        counts / ranker params / fallback), reusing the inner generators kept by
        ``keep_inner=True``. The serving generators stay as they are."""
        cfg = config if isinstance(config, PipelineConfig) else PipelineConfig.from_dict(config)
        if self._inner is None:
            raise NotFittedError("refit_ranker needs Pipeline(..., keep_inner=True).fit() first")
        if [(g.key, g.name, g.params) for g in cfg.generators] != [
                (g.key, g.name, g.params) for g in self.config.generators]:
            raise ConfigError("refit_ranker: generators differ from the fitted ones; fit() anew")
        self.config = cfg
        if self.lexical_ is None:
            self.lexical_ = self._lexical(self._inner.data)
        t = time.perf_counter()
        report = self._train_second_stage(self._inner)
        report["seconds_second_stage"] = round(time.perf_counter() - t, 3)
        self.report_ = {**self.report_, **report}
        return self

    def score(self, histories: Sequence[History]) -> Scores:
        """Ranker scores (>= 0) on each row's merged candidates; every other item gets the
        heuristic blend shifted below all candidates (<= -GAP). In blend mode: the blend."""
        n = self.n_items_
        out = np.empty((len(histories), n), dtype=np.float32)
        bs = self.config.batch_size
        for lo in range(0, len(histories), bs):
            out[lo : lo + bs] = self._score_batch(histories[lo : lo + bs], self.generators_,
                                                  self._spec(self.generators_, self._stats()))
        return out

    def add_items(self, texts: Sequence[str]) -> None:
        """Embed items posted after training (indices continue after the current ones) in the
        pipeline's own text generators, so they can become candidates and get features at
        once. Generators shared with the bundle are left alone: whoever owns the bundle's
        generator adds the items to it (the pipeline reads the same object)."""
        for alias, gen in self.generators_.items():
            grow = getattr(gen, "add_items", None)
            if alias not in self.shared_ and callable(grow):
                grow(texts)
        if self.lexical_ is not None:
            self.lexical_.add(texts)

    # ---- explanations ----------------------------------------------------------------------
    def candidate_features(self, histories: Sequence[History]) -> tuple[
            Candidates, NDArray[np.float32], list[str]]:
        """The merged candidates of ``histories`` and their feature rows (for explanations:
        pass the rows to ``ranker_.contributions``)."""
        spec = self._spec(self.generators_, self._stats())
        scores = self._scores(histories, self.generators_)
        cands, tops = self._candidates(histories, scores, spec.stats)
        return cands, self._features(spec, histories, cands, scores, tops), self.feature_names(
            spec)

    def score_explained(self, history: History) -> tuple[
            NDArray[np.float32], Callable[[Sequence[int]], list[dict[str, float]]]]:
        """One history's :meth:`score` row, and a function giving for any items the ranker's
        ``pred_contrib`` grouped by part: a generator's score, ratio and rank count together
        as its alias; item features such as ``pop_recent`` count alone; the bias is left out.
        Items the ranker did not score, and every item in blend mode, get ``{}``. Scoring and
        explaining share one pass."""
        spec = self._spec(self.generators_, self._stats())
        out, ranked = self._score_rows([history], self.generators_, spec)
        if ranked is None or self.ranker_ is None:
            return out[0], lambda items: [{} for _ in items]
        cands, x = ranked
        names = self.feature_names(spec)
        ranker = self.ranker_

        def explain(items: Sequence[int]) -> list[dict[str, float]]:
            row = {int(i): k for k, i in enumerate(cands.items)}
            keys = [s.key for s in self.config.generators]
            group = [next((a for a in keys if f.startswith(f"{a}_")), f) for f in names]
            labels = sorted(set(group))
            member = np.array([[g == lab for lab in labels] for g in group], dtype=np.float64)
            want = [row.get(int(i), -1) for i in items]
            hit = [k for k in want if k >= 0]
            if not hit:
                return [{} for _ in items]
            grouped = iter(ranker.contributions(x[hit])[:, :-1] @ member)
            return [{lab: round(float(v), 6) for lab, v in zip(labels, next(grouped),
                                                                  strict=True)}
                    if k >= 0 else {} for k in want]

        return out[0], explain

    # ---- internals -------------------------------------------------------------------------
    def _stats(self) -> ItemStats:
        if self.stats_ is None:
            raise NotFittedError("Pipeline is not fitted; call fit() or Pipeline.load()")
        return self.stats_

    def _lexical(self, data: Interactions) -> TitleTerms | None:
        """The items' words, unless there is no text or the config drops both ``lex_*``
        features and takes no ``cold_words``."""
        if set(LEXICAL_FEATURES) <= set(self.config.drop_features) and not (
                self.config.cold_words):
            return None
        return TitleTerms.fit(data.item_text)

    def _item_stats(self, data: Interactions) -> ItemStats:
        return ItemStats.fit(data, categories=self.item_categories,
                             recent_days=self.config.recent_days)

    def _fit_generators(self, data: Interactions,
                        fitted: Sequence[tuple[GeneratorSpec, BaseGenerator]] = ()
                        ) -> tuple[dict[str, BaseGenerator], dict[str, float]]:
        gens: dict[str, BaseGenerator] = {}
        seconds: dict[str, float] = {}
        self.shared_ = {}
        for spec in self.config.generators:
            reuse = next(((s, g) for s, g in fitted if s.same_model(spec)), None)
            if reuse is not None:
                gens[spec.key] = reuse[1]
                self.shared_[spec.key] = reuse[0].key
                continue
            t = time.perf_counter()
            gens[spec.key] = make_generator(spec.name, **spec.params).fit(data)
            seconds[spec.key] = round(time.perf_counter() - t, 3)
        return gens, seconds

    def _spec(self, gens: Mapping[str, BaseGenerator], stats: ItemStats) -> FeatureSpec:
        sem = next((g for g in gens.values() if isinstance(g, Semantic)), None)
        return FeatureSpec(
            aliases=tuple(gens),
            ranked=tuple(s.key for s in self.config.generators if self.config.candidates_of(s)),
            stats=stats, semantic_vectors=None if sem is None else sem.vectors_,
            cold_ranked=tuple(s.key for s in self.config.generators if s.cold_candidates),
            lexical=self.lexical_,
            lexical_cold=bool(self.config.cold_words) and self.lexical_ is not None)

    def _kept_columns(self, spec: FeatureSpec) -> list[int]:
        """Columns of ``spec.names`` the ranker reads: a fitted ranker's own feature names
        (so a pipeline saved before a feature was added keeps serving), else all but
        ``drop_features``."""
        names = spec.names
        if self.ranker_ is not None:
            missing = [f for f in self.ranker_.feature_names_ if f not in names]
            if missing:
                raise ConfigError(f"the pipeline's ranker was trained on features {missing} "
                                  "that this data or version cannot compute; retrain it")
            return [names.index(f) for f in self.ranker_.feature_names_]
        drop = set(self.config.drop_features)
        return [k for k, f in enumerate(names) if f not in drop]

    def feature_names(self, spec: FeatureSpec) -> list[str]:
        names = spec.names
        return [names[k] for k in self._kept_columns(spec)]

    def _features(self, spec: FeatureSpec, histories: Sequence[History], cands: Candidates,
                  scores: Mapping[str, Scores], tops: Mapping[str, NDArray[np.int64]]
                  ) -> NDArray[np.float32]:
        x = spec.compute(histories, cands, scores, tops)
        keep = self._kept_columns(spec)
        return x if keep == list(range(x.shape[1])) else x[:, keep]

    def _scores(self, histories: Sequence[History], gens: Mapping[str, BaseGenerator]
                ) -> dict[str, Scores]:
        n = self._width(gens)
        out: dict[str, Scores] = {}
        for alias, gen in gens.items():
            # features and cold candidates read arbitrary items: no top-list approximation
            s = getattr(gen, "score_exact", gen.score)(histories)
            if s.shape[1] < n:  # a generator that knows fewer items has no opinion on the rest
                s = np.pad(s, ((0, 0), (0, n - s.shape[1])), constant_values=-np.inf)
            out[alias] = s
        return out

    def _candidates(self, histories: Sequence[History], scores: Mapping[str, Scores],
                    stats: ItemStats) -> tuple[Candidates, dict[str, NDArray[np.int64]]]:
        """Each source's top-N, and with ``cold_candidates`` its top-N among cold items
        (key ``<alias>:cold``: items with fewer than COLD_BELOW training interactions,
        including items posted after training), with ``cold_words`` the cold items sharing
        the most words with the history (key ``lex:cold``), merged."""
        tops: dict[str, NDArray[np.int64]] = {}
        exclude = histories if self.config.exclude_seen else None
        n = next(iter(scores.values())).shape[1]
        warm: NDArray[np.bool_] | None = None
        for spec in self.config.generators:
            k = self.config.candidates_of(spec)
            if k > 0:
                tops[spec.key] = top_k(scores[spec.key], k, exclude=exclude)[0]
            if spec.cold_candidates:
                if warm is None:
                    warm = stats.counts(n) >= COLD_BELOW
                cold_only = np.where(warm, -np.inf, scores[spec.key]).astype(np.float32)
                tops[spec.key + COLD_SUFFIX] = top_k(cold_only, spec.cold_candidates,
                                                     exclude=exclude)[0]
        if self.config.cold_words and self.lexical_ is not None:
            if warm is None:
                warm = stats.counts(n) >= COLD_BELOW
            tops[LEX_COLD] = self.lexical_.top_cold(
                histories, np.flatnonzero(~warm), self.config.cold_words, TEXT_HISTORY,
                exclude=self.config.exclude_seen)
        return merge_candidates(list(tops.values()), len(histories), n), tops

    def _score_batch(self, histories: Sequence[History], gens: Mapping[str, BaseGenerator],
                     spec: FeatureSpec) -> Scores:
        return self._score_rows(histories, gens, spec)[0]

    def _score_rows(self, histories: Sequence[History], gens: Mapping[str, BaseGenerator],
                    spec: FeatureSpec
                    ) -> tuple[Scores, tuple[Candidates, NDArray[np.float32]] | None]:
        """Scores, and in ranker mode the merged candidates with the feature rows ranked."""
        scores = self._scores(histories, gens)
        blend = blend_scores(scores, self.weights_)
        if self.mode_ == "blend" or self.ranker_ is None:
            return blend, None
        cands, tops = self._candidates(histories, scores, spec.stats)
        out = blend - (1.0 + GAP)
        x = np.zeros((0, len(self.feature_names(spec))), np.float32)
        if len(cands):
            x = self._features(spec, histories, cands, scores, tops)
            s = self.ranker_.predict(x)
            if self.config.cold_boost:
                cold = spec.stats.counts(out.shape[1])[cands.items] < COLD_BELOW
                s = s + self.config.cold_boost * cold
            rows = cands.rows
            low = np.full(len(histories), np.inf)
            np.minimum.at(low, rows, s)
            out[rows, cands.items] = (s - low[rows]).astype(np.float32)
        return out, (cands, x)

    def _train_second_stage(self, stage: _Stage) -> dict[str, Any]:
        """Tune the blend and (with enough groups) train the ranker on ``stage``."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        hold = stage.holdout
        n_users = len(hold)
        take = np.arange(n_users)
        if cfg.max_train_users is not None and n_users > cfg.max_train_users:
            take = np.sort(rng.choice(n_users, size=cfg.max_train_users, replace=False))
        histories = [hold.histories[k] for k in take]
        targets = [hold.targets[k] for k in take]
        stats = self._item_stats(stage.data)
        spec = self._spec(stage.generators, stats)
        start = {s.key: s.weight for s in cfg.generators}
        report: dict[str, Any] = {"holdout_users": n_users, "train_users": len(take)}
        self.weights_ = dict(start)
        if cfg.tune_blend and len(take) >= 2:
            sub = rng.choice(len(take), size=min(cfg.blend_tuning_users, len(take)),
                             replace=False)
            h_sub = [histories[k] for k in sub]
            scores = self._scores(h_sub, stage.generators)
            self.weights_, ndcg = coordinate_weights(scores, h_sub, [targets[k] for k in sub],
                                                     start=start)
            report["blend_tuning"] = {"users": len(sub), "ndcg10": round(ndcg, 6)}
        report["blend_weights"] = dict(self.weights_)
        self.ranker_ = None
        if len(take) < cfg.min_groups:
            self.mode_ = "blend"
            report.update(mode="blend", reason=f"{len(take)} held-out users < min_groups="
                          f"{cfg.min_groups}")
            return report
        xs: list[NDArray[np.float32]] = []
        ys: list[NDArray[np.int64]] = []
        groups: list[NDArray[np.int64]] = []
        n_cands = hits = 0
        for lo in range(0, len(take), cfg.batch_size):
            h = histories[lo : lo + cfg.batch_size]
            t = targets[lo : lo + cfg.batch_size]
            scores = self._scores(h, stage.generators)
            cands, tops = self._candidates(h, scores, stats)
            target = np.asarray([int(x[0]) for x in t], dtype=np.int64)
            label = (cands.items == target[cands.rows]).astype(np.int64)
            pos = np.bincount(cands.rows, weights=label, minlength=len(h)) > 0
            keep_row = pos[cands.rows]
            n_cands += len(cands)
            hits += int(pos.sum())
            x = self._features(spec, h, cands, scores, tops)
            xs.append(x[keep_row])
            ys.append(label[keep_row])
            groups.append(cands.sizes[pos])
        g = np.concatenate(groups) if groups else np.zeros(0, np.int64)
        report.update(candidate_recall=round(hits / max(len(take), 1), 6),
                      mean_candidates=round(n_cands / max(len(take), 1), 2),
                      train_groups=int(g.shape[0]), train_rows=int(g.sum()))
        if g.shape[0] < cfg.min_groups:
            self.mode_ = "blend"
            report.update(mode="blend", reason=f"{g.shape[0]} groups with the target among the "
                          f"candidates < min_groups={cfg.min_groups}")
            return report
        names = self.feature_names(spec)
        ranker = LambdaMART(cfg.ranker).fit(np.vstack(xs), np.concatenate(ys), g, names)
        self.ranker_, self.mode_ = ranker, "ranker"
        imp = ranker.importance()
        total = sum(imp.values()) or 1.0
        report.update(mode="ranker", best_iteration=ranker.best_iteration_,
                      ranker_valid_ndcg10=ranker.valid_ndcg_,
                      feature_gain_share={k: round(v / total, 4) for k, v in sorted(
                          imp.items(), key=lambda kv: -kv[1])})
        return report

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """``pipeline.json`` (config, mode, weights, report), ``items.npz`` (item
        statistics), ``generators/<alias>/`` (each generator's own save) and ``ranker/``."""
        stats = self._stats()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for alias, gen in self.generators_.items():
            if alias not in self.shared_:
                gen.save(path / "generators" / alias)
        if self.ranker_ is not None:
            self.ranker_.save(path / "ranker")
        arrays = stats.arrays()
        np.savez(path / "items.npz", allow_pickle=False, **arrays)
        if self.lexical_ is not None:
            np.savez(path / "lexical.npz", allow_pickle=False, **self.lexical_.arrays())
        (path / "pipeline.json").write_text(json.dumps({
            "config": self.config.model_dump(mode="json"), "config_hash":
            self.config.config_hash(), "mode": self.mode_, "weights": self.weights_,
            "shared": self.shared_, "report": self.report_}, indent=2, default=str))

    @classmethod
    def load(cls, path: Path, shared: Mapping[str, BaseGenerator] | None = None) -> Pipeline:
        """A saved pipeline; ``shared`` are the bundle's generators by key, for the ones the
        pipeline reused at fit time."""
        path = Path(path)
        meta_file = path / "pipeline.json"
        if not meta_file.is_file():
            raise ConfigError(f"{path} is not a saved pipeline (no pipeline.json)")
        meta = json.loads(meta_file.read_text())
        cfg = PipelineConfig.from_dict(meta["config"], source=str(meta_file))
        with np.load(path / "items.npz", allow_pickle=False) as npz:
            stats = ItemStats.from_arrays({k: npz[k] for k in npz.files})
        obj = cls(cfg, item_categories=stats.categories)
        obj.shared_ = {str(k): str(v) for k, v in meta.get("shared", {}).items()}
        missing = [v for v in obj.shared_.values() if v not in (shared or {})]
        if missing:
            raise ConfigError(f"{path}: the pipeline reuses the bundle's generators {missing}; "
                              "load it with the bundle (load_bundle)")
        obj.generators_ = {s.key: (shared or {})[obj.shared_[s.key]] if s.key in obj.shared_
                           else load_generator(path / "generators" / s.key)
                           for s in cfg.generators}
        obj.stats_, obj.mode_ = stats, meta["mode"]
        if (path / "lexical.npz").is_file():
            with np.load(path / "lexical.npz", allow_pickle=False) as npz:
                obj.lexical_ = TitleTerms.from_arrays({k: npz[k] for k in npz.files})
        obj.weights_ = {k: float(v) for k, v in meta["weights"].items()}
        obj.report_ = meta.get("report", {})
        if obj.mode_ == "ranker":
            obj.ranker_ = LambdaMART.load(path / "ranker")
        return obj
