"""Offline evaluation: splitters, top-k metrics, and a runner that returns flat records."""

from shelfwise.evaluation.metrics import (
    MRR,
    NDCG,
    Coverage,
    HitRate,
    Metric,
    Precision,
    Recall,
    parse_metric,
    relevance,
)
from shelfwise.evaluation.runner import (
    RECORD_COLUMNS,
    evaluate,
    evaluate_sampled,
    format_table,
    read_records,
    write_records,
)
from shelfwise.evaluation.sampled import candidate_lists, rank_candidates, sample_negatives
from shelfwise.evaluation.splitters import EvalSet, LeaveLastOut, Split, Splitter, TemporalSplit

__all__ = [
    "MRR",
    "NDCG",
    "RECORD_COLUMNS",
    "Coverage",
    "EvalSet",
    "HitRate",
    "LeaveLastOut",
    "Metric",
    "Precision",
    "Recall",
    "Split",
    "Splitter",
    "TemporalSplit",
    "candidate_lists",
    "evaluate",
    "evaluate_sampled",
    "format_table",
    "parse_metric",
    "rank_candidates",
    "read_records",
    "relevance",
    "sample_negatives",
    "write_records",
]
