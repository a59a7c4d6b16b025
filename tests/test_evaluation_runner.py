"""The runner end to end on synthetic logs whose right answers are known.

Two cyclic chains of four items: chain P is walked by 10 users, chain Q by 4. Each user has one
rotation of their chain (``p0 p1 p2 p3``, ``p1 p2 p3 p0``, ...), so under leave-last-out the next
item of the chain is the target and every chain step appears in some other user's train part.
P rotations have 4, 3, 2, 1 users, which makes train counts p2=9 > p1=8 > p0=7 > p3=6 > q*=3.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import (
    MRR,
    NDCG,
    RECORD_COLUMNS,
    Coverage,
    HitRate,
    LeaveLastOut,
    Metric,
    TemporalSplit,
    evaluate,
    evaluate_sampled,
    format_table,
    read_records,
    write_records,
)
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval import Cooccurrence, Popularity

P_USERS = {0: 4, 1: 3, 2: 2, 3: 1}  # rotation -> number of users
Q_USERS = {0: 1, 1: 1, 2: 1, 3: 1}
N_P, N_Q = sum(P_USERS.values()), sum(Q_USERS.values())


@pytest.fixture(scope="module")
def chains() -> Interactions:
    rows = []
    for chain, sizes in (("p", P_USERS), ("q", Q_USERS)):
        for rot, count in sizes.items():
            for copy in range(count):
                user = f"{chain}{rot}-{copy}"
                for step in range(4):
                    rows.append((user, f"{chain}{(rot + step) % 4}"))
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id"]))


def models() -> dict[str, Popularity | Cooccurrence]:
    return {"popularity": Popularity(), "cooccurrence": Cooccurrence()}


def value(records: pd.DataFrame, model: str, metric: str) -> float:
    row = records[(records["model"] == model) & (records["metric"] == metric)]
    assert len(row) == 1, row
    return float(row["value"].iloc[0])


METRICS: list[Metric] = [HitRate(1), HitRate(4), HitRate(5), MRR(4), NDCG(10), Coverage(1)]


def test_records_shape(chains: Interactions) -> None:
    records = evaluate(models(), chains, LeaveLastOut(), METRICS, dataset="chains")
    assert list(records.columns) == RECORD_COLUMNS
    assert len(records) == 2 * len(METRICS)
    assert list(dict.fromkeys(records["model"])) == ["popularity", "cooccurrence"]
    assert set(records["dataset"]) == {"chains"} and set(records["split"]) == {"leave-last-out"}
    assert list(records["metric"][:6]) == ["HR@1", "HR@4", "HR@5", "MRR@4", "NDCG@10", "Coverage@1"]
    assert list(records["k"][:6]) == [1, 4, 5, 4, 10, 1]
    assert (records["n_users"] == N_P + N_Q).all() and (records["fit_seconds"] >= 0).all()


def test_known_answers_seen_excluded(chains: Interactions) -> None:
    r = evaluate(models(), chains, LeaveLastOut(), METRICS, dataset="chains")
    n = N_P + N_Q
    # co-occurrence: the only unseen item of the user's chain follows the last one -> rank 1
    for metric in ("HR@1", "HR@4", "MRR@4", "NDCG@10"):
        assert value(r, "cooccurrence", metric) == pytest.approx(1.0)
    # popularity: P users' one unseen P item beats every Q item (rank 1); Q users' target comes
    # after the four P items (rank 5)
    assert value(r, "popularity", "HR@1") == pytest.approx(N_P / n)
    assert value(r, "popularity", "HR@4") == pytest.approx(N_P / n)
    assert value(r, "popularity", "HR@5") == pytest.approx(1.0)
    assert value(r, "popularity", "MRR@4") == pytest.approx(N_P / n)
    assert value(r, "popularity", "NDCG@10") == pytest.approx((N_P + N_Q / math.log2(6)) / n)
    # top-1 lists: popularity shows each P user their target (p0..p3) and Q users p2
    assert value(r, "popularity", "Coverage@1") == pytest.approx(4 / 8)
    assert value(r, "cooccurrence", "Coverage@1") == pytest.approx(8 / 8)


def test_known_answers_seen_kept(chains: Interactions) -> None:
    r = evaluate(models(), chains, LeaveLastOut(), METRICS, dataset="chains", exclude_seen=False)
    assert set(r["split"]) == {"leave-last-out/with-seen"}
    n = N_P + N_Q
    # popularity ranks p2, p1, p0, p3 for everyone: rotation r's target p(r+3) sits at rank 4-r
    assert value(r, "popularity", "HR@1") == pytest.approx(P_USERS[3] / n)
    assert value(r, "popularity", "HR@4") == pytest.approx(N_P / n)
    mrr = sum(P_USERS[rot] / (4 - rot) for rot in range(4)) / n
    assert value(r, "popularity", "MRR@4") == pytest.approx(mrr)
    # co-occurrence now ranks the user's own recent items first: worse than with them removed
    excluded = evaluate(models(), chains, LeaveLastOut(), [HitRate(1)], dataset="chains")
    assert value(r, "cooccurrence", "HR@1") < value(excluded, "cooccurrence", "HR@1")


def test_validation_split_and_reuse(chains: Interactions) -> None:
    split = LeaveLastOut(validation=True).split(chains)
    a = evaluate({"cooccurrence": Cooccurrence()}, chains, split, [HitRate(1)], dataset="c")
    b = evaluate(
        {"cooccurrence": Cooccurrence()},
        chains,
        LeaveLastOut(validation=True),
        [HitRate(1)],
        dataset="c",
    )
    pd.testing.assert_frame_equal(a.drop(columns="fit_seconds"), b.drop(columns="fit_seconds"))


def test_k_max_and_checks(chains: Interactions) -> None:
    r = evaluate(
        {"popularity": Popularity()}, chains, LeaveLastOut(), [HitRate(1)], dataset="c", k_max=50
    )
    assert value(r, "popularity", "HR@1") == pytest.approx(N_P / (N_P + N_Q))
    with pytest.raises(ConfigError, match="k_max"):
        evaluate(models(), chains, LeaveLastOut(), [HitRate(10)], dataset="c", k_max=5)
    with pytest.raises(ConfigError, match="metric"):
        evaluate(models(), chains, LeaveLastOut(), [], dataset="c")
    with pytest.raises(ConfigError, match="no user"):
        evaluate(models(), chains, LeaveLastOut(n_test=4), [HitRate(1)], dataset="c")


def test_temporal_end_to_end() -> None:
    rows = [(f"u{i}", "hit", 1) for i in range(5)] + [(f"u{i}", "hit", 2) for i in range(3)]
    rows += [("u0", "new", 10), ("u1", "hit", 11), ("late", "new", 12)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    data = Interactions.from_frame(frame)
    split = TemporalSplit(cutoff=5)
    r = evaluate(
        {"popularity": Popularity(half_life_days=None)}, data, split, [HitRate(1)], dataset="t"
    )
    # u0 wants "new" (the only unseen item: rank 1); u1 wants "hit", already seen -> a miss
    assert value(r, "popularity", "HR@1") == pytest.approx(1 / 2)
    assert (r["n_users"] == 2).all()  # "late" is cold and left out
    r = evaluate(
        {"popularity": Popularity(half_life_days=None)},
        data,
        split,
        [HitRate(1)],
        dataset="t",
        exclude_seen=False,
    )
    assert value(r, "popularity", "HR@1") == pytest.approx(1 / 2)  # now u1 hits, u0 misses


def test_evaluate_sampled(chains: Interactions) -> None:
    r = evaluate_sampled(
        models(),
        chains,
        LeaveLastOut(),
        [HitRate(1), HitRate(3), HitRate(4)],
        dataset="c",
        n_negatives=3,
    )
    assert set(r["split"]) == {"leave-last-out/sampled-3"}
    n = N_P + N_Q
    # the 4 unseen non-target items are sampled 3 at a time: for Q users they are P items,
    # all more popular than the target -> rank 4
    assert value(r, "popularity", "HR@1") == pytest.approx(N_P / n)
    assert value(r, "popularity", "HR@3") == pytest.approx(N_P / n)
    assert value(r, "popularity", "HR@4") == pytest.approx(1.0)
    assert value(r, "cooccurrence", "HR@1") == pytest.approx(1.0)
    # given negatives: Q items for everyone (rank 1 for P users' targets, ties for Q users)
    split = LeaveLastOut().split(chains)
    q_items = chains.items.indices(["q0", "q1", "q2", "q3"])
    given = [q_items for _ in range(len(split.test))]
    r = evaluate_sampled(
        {"popularity": Popularity()},
        chains,
        split,
        [HitRate(1), HitRate(4)],
        dataset="c",
        negatives=given,
        n_negatives=4,
    )
    assert value(r, "popularity", "HR@4") == pytest.approx(1.0)  # target + 3 Q negatives
    with pytest.raises(ValueError, match="negatives"):
        evaluate_sampled(
            {"popularity": Popularity()},
            chains,
            split,
            [HitRate(1)],
            dataset="c",
            negatives=given[:3],
        )


def test_format_table(chains: Interactions) -> None:
    r = evaluate(models(), chains, LeaveLastOut(), [HitRate(1), NDCG(10)], dataset="chains")
    text = format_table(r)
    lines = text.splitlines()
    assert lines[0].startswith("dataset: chains") and "split: leave-last-out" in lines[0]
    assert lines[1].split() == ["model", "HR@1", "NDCG@10", "fit", "s", "users"]
    assert lines[3].split()[0] == "popularity" and lines[4].split()[0] == "cooccurrence"
    assert lines[4].split()[1:3] == ["1.0000", "1.0000"]
    both = pd.concat(
        [
            r,
            evaluate(
                models(), chains, LeaveLastOut(), [HitRate(1)], dataset="chains", exclude_seen=False
            ),
        ]
    )
    lines = format_table(both).splitlines()
    assert lines[0] == "dataset: chains"
    assert lines[1].split()[:4] == ["split", "model", "HR@1", "NDCG@10"]
    assert len(lines) == 3 + 4
    assert lines[-1].split()[:2] == ["leave-last-out/with-seen", "cooccurrence"]
    assert lines[-1].split()[3] == "-"  # no NDCG for that run
    assert format_table(r.iloc[:0]) == "(no records)"


def test_write_and_read_records(chains: Interactions, tmp_path: object) -> None:
    from pathlib import Path

    r = evaluate(models(), chains, LeaveLastOut(), [HitRate(1), NDCG(10)], dataset="chains")
    path = write_records(r, Path(str(tmp_path)) / "runs" / "records.jsonl")
    lines = path.read_text().splitlines()
    assert len(lines) == len(r) and lines[0].startswith("{")
    back = read_records(path)
    pd.testing.assert_frame_equal(back[RECORD_COLUMNS], r, check_dtype=False)
    write_records(r, path, append=True)
    assert len(read_records(path)) == 2 * len(r)
    nan = r.assign(value=np.nan)
    write_records(nan, path)
    assert read_records(path)["value"].isna().all()
