"""Records folders for the review tests: a clean one shaped like the records (root train_gpt.py layout, the
official log lines) and the same folder with one violation planted. Nothing here is run; the review only reads it."""

from __future__ import annotations

import base64
import json
import lzma
import math
from pathlib import Path

CLEAN_SCRIPT = '''"""A small submission in the shape of the root train_gpt.py."""
import glob
import os
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F


class Hyperparameters:
    train_files = os.environ.get("TRAIN_FILES", "./data/fineweb_train_*.bin")
    val_files = os.environ.get("VAL_FILES", "./data/fineweb_val_*.bin")
    seed = int(os.environ.get("SEED", 1337))
    vocab_size = int(os.environ.get("VOCAB_SIZE", 1024))
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    iterations = int(os.environ.get("ITERATIONS", 20000))
    max_wallclock_seconds = float(os.environ.get("MAX_WALLCLOCK_SECONDS", 600.0))
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "1")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    ttt_chunk = int(os.environ.get("TTT_CHUNK", 32768))


def build_sentencepiece_luts(sp, vocab_size):
    base = np.zeros(vocab_size, dtype=np.int16)
    space = np.zeros(vocab_size, dtype=np.bool_)
    boundary = np.ones(vocab_size, dtype=np.bool_)
    for i in range(vocab_size):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, space, boundary


def load_validation_tokens(pattern, seq_len):
    files = sorted(glob.glob(pattern))
    tokens = torch.cat([torch.from_numpy(np.fromfile(f, dtype="<u2", offset=1024).astype(np.int64)) for f in files])
    usable = ((tokens.numel() - 1) // seq_len) * seq_len
    return tokens[: usable + 1]


class Attention(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def eval_val(args, model, val_tokens, luts):
    seq_len = args.train_seq_len
    val_loss_sum = torch.zeros((), dtype=torch.float64)
    val_token_count = torch.zeros((), dtype=torch.float64)
    model.eval()
    with torch.inference_mode():
        for start in range(0, val_tokens.numel() - 1 - seq_len, seq_len):
            local = val_tokens[start:start + seq_len + 1]
            x = local[:-1].reshape(1, -1)
            y = local[1:].reshape(1, -1)
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum")
            val_loss_sum += loss.to(torch.float64)
            val_token_count += y.numel()
    model.train()
    return float(val_loss_sum / val_token_count)


def eval_val_ttt(args, model, val_tokens):
    """Score each chunk, then train on it (score-first, PR #549)."""
    opt = torch.optim.SGD(model.parameters(), lr=args.ttt_lr)
    loss_sum = torch.zeros((), dtype=torch.float64)
    n_chunks = (val_tokens.numel() - 1) // args.ttt_chunk
    for ci in range(n_chunks):
        chunk = val_tokens[ci * args.ttt_chunk:(ci + 1) * args.ttt_chunk + 1]
        x, y = chunk[:-1].reshape(1, -1), chunk[1:].reshape(1, -1)
        with torch.no_grad():
            nll = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1), reduction="sum")
            loss_sum += nll.to(torch.float64)
        if ci < n_chunks - 1:
            loss = F.cross_entropy(model(x).reshape(-1, 1024), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(loss_sum)


def collect_hessians(model, loader, n_batches):
    hessians = {}
    for _ in range(n_batches):
        x, y = loader.next_batch()
        model(x)
    return hessians


class Loader:
    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))

    def next_batch(self):
        t = torch.from_numpy(np.fromfile(self.files[0], dtype="<u2", offset=1024).astype(np.int64))
        return t[:1024].reshape(1, -1), t[1:1025].reshape(1, -1)


def main():
    args = Hyperparameters()
    model = torch.nn.Linear(8, 8)
    val_tokens = load_validation_tokens(args.val_files, args.train_seq_len)
    train_loader = Loader(args.train_files)
    opt = torch.optim.AdamW(model.parameters())
    t0 = time.perf_counter()
    step = 0
    while step < args.iterations:
        x, y = train_loader.next_batch()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 1000 == 0:
            print("val", eval_val(args, model, val_tokens, None))
        if time.perf_counter() - t0 > args.max_wallclock_seconds:
            break
    hessians = collect_hessians(model, Loader(args.train_files), 16)
    print(subprocess.run(["nvidia-smi"], capture_output=True).stdout)
    print("final", eval_val(args, model, val_tokens, None))
    if args.ttt_enabled:
        print("ttt", eval_val_ttt(args, model, val_tokens))


if __name__ == "__main__":
    main()
'''

SEEDS = (1337, 42, 2025)
BPB = {1337: 1.1100, 42: 1.1110, 2025: 1.1105}
RATIO = 0.5922  # val_bpb per nat of val_loss for sp1024 (baseline: 1.2244 / 2.0727)


def log_text(seed: int, bpb: float, *, train_ms: int = 590_000, steps: int = 7000, model_bytes: int = 15_500_000,
             code_bytes: int | None = None, eval_ms: int = 410_000, hessian_s: float | None = 6.0,
             extra: str = "", val_tokens: int = 62_021_632, compressed_code: int | None = None,
             tokenizer: str = "fineweb_1024_bpe.model") -> str:
    loss = bpb / RATIO
    code = len(CLEAN_SCRIPT.encode()) if code_bytes is None else code_bytes
    lines = [
        f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=./data/tokenizers/{tokenizer}",
        "train_loader:dataset:fineweb10B_sp1024 train_shards:80",
        f"val_loader:shards pattern=./data/datasets/fineweb10B_sp1024/fineweb_val_*.bin tokens:{val_tokens}",
        "model_params:17059912",
        "world_size:8 grad_accum_steps:1",
        "train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000",
        f"seed:{seed}",
    ]
    for s in (1, 1000, 2000, steps):
        lines.append(f"step:{s}/20000 train_loss:{3.0 - s / 10000:.4f} train_time:{train_ms * s // steps}ms "
                     f"step_avg:{train_ms / steps:.2f}ms")
    lines.append(f"step:{steps}/20000 val_loss:{loss + 0.01:.4f} val_bpb:{bpb + 0.006:.4f} train_time:{train_ms}ms "
                 f"step_avg:{train_ms / steps:.2f}ms")
    lines.append(f"stopping_early: wallclock_cap train_time:{train_ms}ms step:{steps}/20000")
    lines.append("peak memory allocated: 20000 MiB reserved: 20500 MiB")
    if hessian_s is not None:
        lines += ["GPTQ:collecting Hessians from calibration data...", f"GPTQ:collected 66 Hessians in {hessian_s:.1f}s"]
    if compressed_code is not None:
        code_lines = [f"Code size (uncompressed): {code} bytes", f"Code size (compressed): {compressed_code} bytes"]
        code = compressed_code
    else:
        code_lines = [f"Code size: {code} bytes"]
    lines += ["Serialized model: 106000000 bytes", *code_lines, f"Serialized model int6+brotli: {model_bytes} bytes",
              f"Total submission size int6+brotli: {model_bytes + code} bytes",
              f"final_int6_roundtrip val_loss:{loss + 0.03:.4f} val_bpb:{bpb + 0.02:.4f} eval_time:6000ms",
              f"final_int6_roundtrip_exact val_loss:{loss + 0.03:.8f} val_bpb:{bpb + 0.02:.8f}"]
    lines += extra.splitlines()
    lines += [f"legal_ttt val_loss:{loss:.4f} val_bpb:{bpb:.4f} eval_time:{eval_ms}ms",
              f"legal_ttt_exact val_loss:{loss:.8f} val_bpb:{bpb:.8f}"]
    return "\n".join(lines) + "\n"


def make_record(root: Path, name: str = "clean", *, script: str = CLEAN_SCRIPT, seeds=SEEDS, bpb=None,
                submission: dict | None = None, readme: str | None = None, log_kw: dict | None = None,
                logs: dict[str, str] | None = None) -> Path:
    """Write a records folder. ``bpb`` maps seed → score; ``log_kw`` goes to ``log_text`` for every seed."""
    d = root / name
    d.mkdir(parents=True)
    bpb = bpb or {s: BPB.get(s, 1.1100) for s in seeds}
    (d / "train_gpt.py").write_text(script)
    for s in seeds:
        (d / f"train_seed{s}.log").write_text(log_text(s, bpb[s], **(log_kw or {})))
    for fname, text in (logs or {}).items():
        (d / fname).write_text(text)
    mean = sum(bpb[s] for s in seeds) / len(seeds)
    sub = {"author": "t", "name": name, "track": "10min_16mb", "val_bpb": round(mean, 5),
           "val_loss": round(mean / RATIO, 5), "seeds": list(seeds), "comparison_baseline_bpb": 1.1194}
    if submission is not None:
        sub.update(submission)
        sub = {k: v for k, v in sub.items() if v is not None}
    (d / "submission.json").write_text(json.dumps(sub))
    if readme is None:
        rows = "\n".join(f"| {s} | {bpb[s]:.4f} |" for s in seeds)
        readme = f"# {name}\n\nval_bpb {mean:.5f} (3-seed mean)\n\n| Seed | val_bpb |\n|---|---|\n{rows}\n"
    (d / "README.md").write_text(readme)
    return d


def wrap_lzma_b85(source: str) -> str:
    """The self-extracting form of [04-05]: raw LZMA2 + base85 inside an exec."""
    raw = lzma.compress(source.encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    lit = base64.b85encode(raw).decode()
    return ('import lzma as L,base64 as B\n'
            f'exec(L.decompress(B.b85decode("{lit}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}]))\n')


def plant(old: str, new: str, script: str = CLEAN_SCRIPT) -> str:
    assert old in script, old
    return script.replace(old, new, 1)


def one_sided_p(values: list[float], mu: float) -> float:
    """Reference: one-sample t statistic's lower tail, by hand (no scipy) for a test of the adapter."""
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    t = (m - mu) / (sd / math.sqrt(n))
    from scipy.stats import t as tdist

    return float(tdist.cdf(t, n - 1))
