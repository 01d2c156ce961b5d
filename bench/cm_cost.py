"""What the token context mixer costs at a given vocabulary (e.g. record-0427's 8,192 pieces), at small scale.

The cost of ``eval.mix.mode=cm`` has two parts: in the LM pass, the path probabilities of every target
(:func:`pgolf.eval.cm.mixer.lm_path_probs`: a softmax, a V-leaf tree of sums, B gathers), and after it the
mixer (:func:`pgolf.eval.cm.mixer.cm_losses`: B = ⌈log2 V⌉ decisions per token, one sort per context,
depth and model). This script tokenizes the first documents of a JSON-lines file with the given
SentencePiece model, times the mixer on them with an uninformed LM (every path probability ½; the
counts and contexts are the real text's) and the path probabilities on random logits of one scoring
batch, and projects both per million tokens:

    python bench/cm_cost.py --tokenizer ../shared/tokenizers/fineweb_8192_bpe.model \\
        --text ../shared/data/enwiki/val.jsonl --tokens 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.eval.cm.contexts import n_bits  # noqa: E402
from pgolf.eval.cm.mixer import cm_losses, lm_path_probs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--rows", type=int, default=64, help="rows × 256 positions of the timed LM batch")
    args = ap.parse_args(argv)
    import sentencepiece as spm
    import torch

    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    V = sp.get_piece_size()
    ids: list[int] = []
    with open(args.text, encoding="utf-8") as f:
        for line in f:
            ids.append(sp.bos_id() if sp.bos_id() >= 0 else 0)
            ids.extend(sp.encode(json.loads(line)["text"]))
            if len(ids) > args.tokens:
                break
    t = np.asarray(ids[: args.tokens + 1], np.int64)
    ws = np.array([sp.id_to_piece(i).startswith("\u2581") or sp.is_control(i) for i in range(V)])
    bnd = np.array([sp.is_control(i) for i in range(V)])
    B = n_bits(V)
    n = t.shape[0] - 1
    p1 = np.full((n, B + 1), 0.5, np.float32)
    p1[:, B] = 0
    t0 = time.perf_counter()
    out = cm_losses(t, p1, np.ones(n, bool), V, ws, boundary=bnd, spec="orders,words,doc,lmtop,match,mixer2")
    mix_s = time.perf_counter() - t0
    logits = torch.randn(args.rows, 256, V)
    y = torch.randint(0, V, (args.rows, 256))
    lp = torch.log_softmax(logits, -1)
    lm_path_probs(lp, y, V)
    t0 = time.perf_counter()
    lm_path_probs(lp, y, V)
    path_s = time.perf_counter() - t0
    per_m = 1e6 / n
    print(f"V {V}, B {B}, {n:,} tokens: mixer {mix_s:.1f} s ({mix_s * per_m:.0f} s per M tokens; features "
          f"{out.info['features_seconds']:.1f} s), counts-only {out.losses.mean() / np.log(2):.3f} bits/token")
    print(f"path probabilities: {path_s * 1e3:.0f} ms per {args.rows * 256:,} positions "
          f"({path_s * 1e6 / (args.rows * 256):.1f} s per M tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
