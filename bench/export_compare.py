"""Export schemes on one checkpoint: post-export val_bpb, val_bpb_raw, quantization gap and bytes.

Rows (all from the same checkpoint and the same Hessians):
  (a) int8_zlib  (b) int6_gptqlite_zstd  (c) gptq6_emb7_brotli, and the records' own recipes
  (r1) record_0322  (r2) record_0414  (r3) record_0427 (pgolf.export.driver, each citing its record's lines);
  (d) the budget search at the model bytes of (c), and at 75 % of them; plus diagnostic rows:
      the search at the bytes of (a) and (b), and with Hessian-only weights (no loss probes / checks).

Model bytes, not artifact bytes, are matched: the code (the same for every row) is ~40 % of the
artifact on the cpu preset and would otherwise dominate "75 %". The search's plan choice uses only
self-generated text (never validation); validation is read once per row, after export, to score it.

    python bench/export_compare.py /work/runs/cpu-enwiki --json /tmp/export_compare.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402
from pgolf.artifact.budget import code_bytes  # noqa: E402
from pgolf.config import apply_overrides, load_config  # noqa: E402
from pgolf.data.prepare import prepare_data  # noqa: E402
from pgolf.export.driver import (  # noqa: E402
    calibration_hessians,
    export_model,
    generated_loss_fn,
    load_model_state,
)
from pgolf.export.search import PackSettings, Search, SearchSpace  # noqa: E402
from pgolf.export.solve import format_choices, solve  # noqa: E402
from pgolf.model.gpt import GPT, parameter_roles  # noqa: E402
from pgolf.runner import evaluate_model  # noqa: E402
from pgolf.train import checkpoint as ckpt_mod  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a loaded 2-core box)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override section.key=value")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(load_config(str(args.run_dir / "config.json")), args.sets)
    ck = ckpt_mod.load_checkpoint(args.run_dir)
    model = GPT(cfg.model)
    model.load_state_dict(ck.model_state)
    model.eval()
    device = torch.device("cpu")
    data = prepare_data(cfg)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    roles = parameter_roles(model)
    code = code_bytes(cfg)  # the run's train_gpt.py, charged alike to every row
    t0 = time.perf_counter()
    pre = evaluate_model(model, cfg, data, device)
    print(f"pre-quant val_bpb {pre.val_bpb:.6f} val_bpb_raw {pre.val_bpb_raw} ({time.perf_counter() - t0:.0f}s)", flush=True)

    t0 = time.perf_counter()
    hessians, source, info = calibration_hessians(model, cfg.export, seq_len=cfg.train.seq_len, run_dir=args.run_dir)
    print(f"hessians: {source} {info} ({time.perf_counter() - t0:.0f}s)", flush=True)
    loss_fn = generated_loss_fn(model, cfg.export, seq_len=cfg.train.seq_len)

    rows: list[dict] = []

    def score(label: str, blob: bytes, extra: dict) -> dict:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "model.pgolf"
            p.write_bytes(blob)
            state, _ = load_model_state(p)
        net = GPT(cfg.model)
        net.load_state_dict(state, strict=True)
        post = evaluate_model(net, cfg, data, device)
        r = {"row": label, "val_bpb": post.val_bpb, "val_bpb_raw": post.val_bpb_raw, "gap": post.val_bpb - pre.val_bpb,
             "gap_raw": (post.val_bpb_raw - pre.val_bpb_raw) if pre.val_bpb_raw is not None else None,
             "model_bytes": len(blob), "artifact_bytes": len(blob) + code, "gen_loss": loss_fn(state), **extra}
        rows.append(r)
        print(json.dumps(r), flush=True)
        return r

    fixed = {}
    for key, scheme in (("a", "int8_zlib"), ("b", "int6_gptqlite_zstd"), ("c", "gptq6_emb7_brotli"),
                        ("r1", "record_0322"), ("r2", "record_0414"), ("r3", "record_0427")):
        t0 = time.perf_counter()
        res = export_model(sd, apply_overrides(cfg, [f"export.scheme={scheme}"]).export, roles=roles, hessians=hessians,
                           hessian_source=source)
        fixed[key] = res
        score(f"({key}) {scheme}", res.blob, {"seconds": time.perf_counter() - t0})

    search = Search(sd, roles, hessians, space=SearchSpace.from_config(cfg.export), settings=PackSettings(),
                    log=lambda m: print(m, flush=True))
    t0 = time.perf_counter()
    search.run_measurements()
    print(f"measurements {time.perf_counter() - t0:.0f}s", flush=True)
    c_bytes = fixed["c"].model_bytes
    budgets = [("(d) budget @ (c) bytes", c_bytes, "loss", cfg.export.verify_plans),
               ("(d) budget @ 75 % of (c)", int(0.75 * c_bytes), "loss", cfg.export.verify_plans),
               ("budget @ (c), Hessian weights, no checks", c_bytes, "hessian", 0),
               ("budget @ 75 % of (c), Hessian weights, no checks", int(0.75 * c_bytes), "hessian", 0),
               ("budget @ (b) bytes", fixed["b"].model_bytes, "loss", cfg.export.verify_plans),
               ("budget @ (a) bytes", fixed["a"].model_bytes, "loss", cfg.export.verify_plans)]
    for label, b, weights, verify in budgets:
        t0 = time.perf_counter()
        r = solve(search, b, loss_fn=loss_fn, weights=weights, verify=verify)
        print(format_choices(r), flush=True)
        score(label, r.blob, {"budget_model_bytes": b, "seconds": time.perf_counter() - t0, "weights": r.weights_source,
                              "plan": {c.group: c.option.label for c in r.choices}, "candidates": r.candidates,
                              "pruned": r.pruned})

    print(f"\ncheckpoint {args.run_dir} ({cfg.name}: {sum(v.numel() for v in sd.values()):,} params); "
          f"pre-quant val_bpb {pre.val_bpb:.4f}, val_bpb_raw {pre.val_bpb_raw:.4f}; code {code:,} bytes; "
          f"Hessians: {source}\n")
    print("| row | model bytes | artifact bytes | val_bpb | val_bpb_raw | gap (post − pre) | loss on generated text |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | {r['model_bytes']:,} | {r['artifact_bytes']:,} | {r['val_bpb']:.4f} | "
              f"{r['val_bpb_raw']:.4f} | {r['gap']:+.4f} | {r['gen_loss']:.4f} |")
    if args.json:
        fileio.write_text(args.json, json.dumps({"pre": {"val_bpb": pre.val_bpb, "val_bpb_raw": pre.val_bpb_raw},
                                         "hessians": {"source": source, **info}, "code_bytes": code, "rows": rows},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
