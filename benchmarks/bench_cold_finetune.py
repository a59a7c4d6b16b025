"""Does an e5 fine-tuned on the shop's own next-item pairs place cold items better? (issue 15)

The semantic generator alone, with the served e5 against e5 fine-tuned (``shelfwise.text.
finetune``, LoRA, InfoNCE with in-batch negatives) on item-text -> next-item-text pairs
(``pairs_from_sequences``) mined from the training histories. Validation split of
leave-last-out (train ``s[:-2]``, target ``s[-2]``: the pairs never contain a target), full
ranking, fed-history items excluded; HR@10 / NDCG@10 on all users and on cold-item targets
(< 5 training interactions, as ``bench_cold_start``).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_cold_finetune \
        amazon_games [--pairs 8000] [--max-len 32] [--out DIR]

A preset with item texts (``amazon_games``); one CPU thread trains ~11 pairs/s on Games
titles. Writes ``benchmarks/results/cold_finetune_<preset>_<pairs>.json``; the tuned encoder
stays in ``--out`` (reused when it is already there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_cold_start import cold_mask, slice_metrics, targets_of
from benchmarks.common import write_results
from shelfwise.cli.evaluate_cmd import load_data
from shelfwise.evaluation import LeaveLastOut
from shelfwise.retrieval import make_generator, recommend
from shelfwise.text.finetune import MANIFEST, FinetuneConfig, finetune, read_manifest
from shelfwise.text.pairs import pairs_digest, pairs_from_sequences, sample_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("preset", help="a dataset preset with item texts, e.g. amazon_games")
    ap.add_argument("--pairs", type=int, default=8000, help="training pairs sampled")
    ap.add_argument("--max-len", type=int, default=32, help="tokens per text when training")
    ap.add_argument("--out", type=Path, default=None, help="tuned encoder directory")
    args = ap.parse_args()
    out = args.out or Path(f"/tmp/cold_finetune_{args.preset}_{args.pairs}")
    data, name = load_data(None, args.preset, None)
    if data.item_text is None:
        raise SystemExit(f"{args.preset} has no item texts to fine-tune on")
    split = LeaveLastOut(validation=True).split(data)
    assert split.valid is not None
    train, valid = split.train, split.valid
    targets = targets_of(valid)
    masks = {"all": np.ones(len(targets), bool), "cold_items": cold_mask(train, targets)}
    texts = {str(i): t for i, t in enumerate(train.item_text or [])}
    pairs = pairs_from_sequences([[str(i) for i in h] for h in train.histories()], texts)
    cfg = FinetuneConfig(max_len=args.max_len, max_pairs=args.pairs)
    record: dict[str, Any] = {
        "dataset": name, "split": "leave-last-out validation (train s[:-2], target s[-2])",
        "users": len(targets), "cold_item_users": int(masks["cold_items"].sum()),
        "pairs_available": len(pairs), "finetune_config": cfg.to_config()}
    if not (out / MANIFEST).exists():
        finetune(pairs, out, cfg)
    made = read_manifest(out)
    if made["pairs_digest"] != pairs_digest(sample_pairs(pairs, cfg.max_pairs, seed=cfg.seed)):
        raise SystemExit(f"{out} was tuned on other pairs; give another --out")
    record["finetune"] = {k: made[k] for k in ("id", "pairs", "steps", "seconds", "final_loss")}
    rows = []
    for label, encoder in (("e5", "e5"), ("e5 fine-tuned on next-item pairs", str(out))):
        start = time.perf_counter()
        model = make_generator("semantic", encoder=encoder).fit(train)
        reco, _ = recommend(model, valid.histories, 10)
        rows.append({"model": f"semantic ({label})", **slice_metrics(reco, targets, masks),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    record["results"] = rows
    record["load_average"] = os.getloadavg()
    path = write_results(f"cold_finetune_{args.preset}_{args.pairs}", record)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
