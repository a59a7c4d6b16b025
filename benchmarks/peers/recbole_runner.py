"""Train RecBole's SASRec on a split written by ``benchmarks/bench_peers.py``; export full scores.

Runs inside the RecBole venv (``benchmarks/peers/.venv-recbole``, made by ``setup_recbole.sh``),
never in shelfwise's: RecBole 1.2.1 needs numpy<2. It reads only numpy arrays from the split
file, so it sees exactly the data every other model of the peer table sees:

* the atomic ``.inter`` file holds each user's *training* sequence (``s[:-1]``, the arrays
  ``train_items``/``train_offsets``), item tokens = shelfwise item indices;
* RecBole's own leave-one-out ``valid_only`` split then trains on ``s[:-2]`` prefixes and uses
  ``s[-2]`` (the split's validation target) for epoch choice, as in the SASRec protocol;
* the best-validation weights score every test user fed that same ``s[:-1]`` history, and the
  full score matrix (test users x all shelfwise items, float32) is written as ``.npy``.
  Seen-item exclusion, top-k and metrics happen in shelfwise, not here (RecBole's evaluator does
  not drop seen items for sequential models).

Training stops at ``--epochs`` or when ``--budget-seconds`` of training time would be exceeded by
another epoch (CPU budget), or after ``--stopping-step`` validations without improvement.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 .venv-recbole/bin/python recbole_runner.py \
        --split S.npz --scores OUT.npy --meta OUT.json --workdir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_atomic(split: dict[str, np.ndarray], folder: Path, name: str) -> int:
    """``<folder>/<name>/<name>.inter`` from the split's training sequences; returns rows."""
    items, offsets = split["train_items"], split["train_offsets"]
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    rows = 0
    with (target / f"{name}.inter").open("w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(offsets.shape[0] - 1):
            seq = items[offsets[u] : offsets[u + 1]]
            fh.writelines(f"{u}\t{int(i)}\t{t}\n" for t, i in enumerate(seq))
            rows += seq.shape[0]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="RecBole SASRec on a shelfwise peer split")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True, help="output .npy score matrix")
    parser.add_argument("--meta", type=Path, required=True, help="output json: config, epochs")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--budget-seconds", type=float, default=1800.0)
    parser.add_argument("--stopping-step", type=int, default=5)
    parser.add_argument("--eval-step", type=int, default=1)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(1)
    split = dict(np.load(args.split, allow_pickle=False))
    name = "shelfwise_split"
    rows = write_atomic(split, args.workdir, name)
    params: dict[str, Any] = {
        "data_path": str(args.workdir),
        "checkpoint_dir": str(args.workdir / "saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": args.max_seq_length,
        "hidden_size": args.hidden_size,
        "inner_size": 4 * args.hidden_size,
        "n_layers": args.layers,
        "n_heads": 2,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "learning_rate": 0.001,
        "train_batch_size": args.batch_size,
        "eval_batch_size": 4096,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "eval_step": args.eval_step,
        "eval_args": {"split": {"LS": "valid_only"}, "order": "TO", "group_by": "user",
                      "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "seed": args.seed,
        "reproducibility": True,
        "show_progress": False,
        "device": "cpu",
        "use_gpu": False,
        "worker": 0,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
    }
    config = Config(model="SASRec", dataset=name, config_dict=params)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to("cpu")
    trainer = Trainer(config, model)

    start = time.perf_counter()
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    stale = 0
    epoch_seconds: list[float] = []
    stop_reason = f"reached --epochs {args.epochs}"
    for epoch in range(args.epochs):
        elapsed = time.perf_counter() - start
        if epoch_seconds and elapsed + float(np.mean(epoch_seconds)) > args.budget_seconds:
            stop_reason = f"CPU budget of {args.budget_seconds:.0f} s training time"
            break
        t0 = time.perf_counter()
        model.train()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        row: dict[str, float] = {"epoch": epoch, "loss": float(np.sum(loss)),
                                 "train_seconds": time.perf_counter() - t0}
        if (epoch + 1) % args.eval_step == 0:
            score, result = trainer._valid_epoch(valid_data, show_progress=False)
            row.update({"valid_ndcg10_recbole": float(score),
                        "valid_recall10_recbole": float(result["recall@10"])})
            if best is None or score > best[0]:
                best = (float(score), epoch,
                        {k: v.detach().clone() for k, v in model.state_dict().items()})
                stale = 0
            else:
                stale += 1
        epoch_seconds.append(time.perf_counter() - t0)
        row["seconds"] = epoch_seconds[-1]
        history.append(row)
        print(json.dumps(row), flush=True)
        if stale >= args.stopping_step:
            stop_reason = f"no validation gain for {args.stopping_step} evaluations"
            break
    fit_seconds = time.perf_counter() - start
    if best is None:
        raise SystemExit("recbole_runner: no epoch was validated; raise --budget-seconds")
    model.load_state_dict(best[2])
    model.eval()

    # RecBole internal item id -> shelfwise item index (tokens are shelfwise indices).
    n_items = int(split["n_items"])
    tokens = dataset.field2id_token["item_id"]
    rb_of = np.full(n_items, -1, np.int64)
    for rb, tok in enumerate(tokens):
        if rb > 0:  # 0 is [PAD]
            rb_of[int(tok)] = rb
    known = np.flatnonzero(rb_of >= 0)
    test_users = split["test_users"]
    offsets, items = split["train_offsets"], split["train_items"]
    scores = np.lib.format.open_memmap(args.scores, mode="w+", dtype=np.float32,
                                       shape=(test_users.shape[0], n_items))
    t0 = time.perf_counter()
    L = args.max_seq_length
    with torch.no_grad():
        for lo in range(0, test_users.shape[0], 1024):
            batch = test_users[lo : lo + 1024]
            seq = np.zeros((batch.shape[0], L), np.int64)
            lens = np.zeros(batch.shape[0], np.int64)
            for r, u in enumerate(batch):
                h = rb_of[items[offsets[u] : offsets[u + 1]]][-L:]
                seq[r, : h.shape[0]] = h
                lens[r] = h.shape[0]
            from recbole.data.interaction import Interaction

            inter = Interaction({model.ITEM_SEQ: torch.from_numpy(seq),
                                 model.ITEM_SEQ_LEN: torch.from_numpy(lens)})
            s = model.full_sort_predict(inter).numpy()
            out = np.full((batch.shape[0], n_items), -np.inf, np.float32)
            out[:, known] = s[:, rb_of[known]]
            scores[lo : lo + batch.shape[0]] = out
    scores.flush()
    score_seconds = time.perf_counter() - t0
    import recbole

    meta = {
        "library": f"recbole {recbole.__version__}, torch {torch.__version__}",
        "model": "SASRec",
        "config": {k: v for k, v in params.items() if k not in ("data_path", "checkpoint_dir")},
        "atomic_rows": rows,
        "epochs_run": len(history),
        "best_epoch": best[1],
        "best_valid_ndcg10_recbole_evaluator": best[0],
        "stop_reason": stop_reason,
        "mean_epoch_seconds": float(np.mean(epoch_seconds)),
        "fit_seconds": fit_seconds,
        "score_seconds": score_seconds,
        "items_unknown_to_recbole": int(n_items - known.shape[0]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "history": history,
        "torch_threads": torch.get_num_threads(),
        "pid": os.getpid(),
    }
    args.meta.write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
