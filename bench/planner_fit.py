"""Fit the planner's table (pgolf/export/planner_table.json) on trained checkpoints, and measure its error.

For every checkpoint (a run directory) and every group class (embed, attn, mlp):
  * weight statistics: rows normalised by their std, pooled excess kurtosis κ → the generalized-normal
    shape β with that kurtosis, median row std and the std of log row std;
  * per fixed export scheme: the real export's per-tensor compressed bytes (the same export as
    `pgolf export`, Hessians self-generated for GPTQ) against the planner's synthetic bytes for the same
    shapes → correction = Σ real / Σ synthetic (pooled over checkpoints);
  * passthrough floats: compressed / raw bytes per codec; all weights as fp16 under shuffle2+brotli-11.
Then prints predicted vs actual model bytes per (checkpoint, scheme): in-sample and leave-one-out
(the table fitted without that checkpoint).

    python bench/planner_fit.py /work/runs/i3b-tiny /work/runs/i3b-demo /work/runs/i3b-dev --write
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import fileio  # noqa: E402
from pgolf.artifact import codecs  # noqa: E402
from pgolf.artifact.format import tensor_bytes  # noqa: E402
from pgolf.config import apply_overrides, load_config  # noqa: E402
from pgolf.export import planner  # noqa: E402
from pgolf.export.driver import calibration_hessians, export_model  # noqa: E402
from pgolf.model.gpt import GPT, parameter_roles  # noqa: E402
from pgolf.train import checkpoint as ckpt_mod  # noqa: E402

SCHEMES = ("int8_zlib", "int6_gptqlite_zstd", "gptq6_emb7_brotli")
CLASSES = ("embed", "attn", "mlp")


def weight_stats(sd: dict[str, torch.Tensor], roles) -> dict[str, dict[str, float]]:
    """Per group class: pooled moments of row-normalised values and row-std statistics."""
    out = {}
    for gc in CLASSES:
        ws = [t.float() for n, t in sd.items()
              if t.ndim == 2 and t.is_floating_point() and planner.group_class(roles[n]) == gc]
        if not ws:
            continue
        m2 = m4 = cnt = 0.0
        logs = []
        for w in ws:
            sd_row = w.std(dim=1).clamp_min(1e-12)
            z = (w - w.mean(dim=1, keepdim=True)) / sd_row[:, None]
            m2 += float(z.double().pow(2).sum())
            m4 += float(z.double().pow(4).sum())
            cnt += z.numel()
            logs.append(sd_row.double().log())
        lg = torch.cat(logs)
        out[gc] = {"kurtosis": (m4 / cnt) / (m2 / cnt) ** 2 - 3.0, "log_std_median": float(lg.median()),
                   "row_log_std": float(lg.std()) if lg.numel() > 1 else 0.0}
    return out


def tails_from(stats: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    tails = {}
    for gc in CLASSES:
        xs = [s[gc] for s in stats if gc in s]
        if not xs:
            continue
        k = sum(x["kurtosis"] for x in xs) / len(xs)
        tails[gc] = {"beta": round(planner.gn_beta(k), 4), "kurtosis": round(k, 4), "row_log_std": round(sum(x["row_log_std"] for x in xs) / len(xs), 4),
                     "row_std_median": round(math.exp(sum(x["log_std_median"] for x in xs) / len(xs)), 6)}
    return tails


def measure(run_dir: Path, calib_seqs: int) -> dict:
    """Everything a fit needs from one checkpoint: stats, real per-class bytes per scheme, float ratios."""
    cfg = load_config(str(run_dir / "config.json"))
    ck = ckpt_mod.load_checkpoint(run_dir)
    model = GPT(cfg.model)
    model.load_state_dict(ck.model_state)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    roles = parameter_roles(model)
    h, source, info = calibration_hessians(model, apply_overrides(cfg, [f"export.calib_seqs={calib_seqs}"]).export,
                                           seq_len=cfg.train.seq_len, run_dir=run_dir)
    real: dict[str, dict] = {}
    for scheme in SCHEMES:
        c = apply_overrides(cfg, [f"export.scheme={scheme}"])
        res = export_model(sd, c.export, roles=roles, meta={"config": c.to_dict(), "calibration": info}, hessians=h, hessian_source=source)
        per: dict[str, float] = {}
        floats: dict[str, list[int]] = {}
        for r in res.rows:
            if r.scheme in ("fp16", "fp32", "raw"):
                f = floats.setdefault(r.scheme, [0, 0])
                f[0] += r.compressed_bytes
                f[1] += r.quant_bytes
            else:
                gc = planner.group_class(roles[r.name])
                per[gc] = per.get(gc, 0) + r.compressed_bytes
        real[scheme] = {"model_bytes": res.model_bytes, "classes": per, "floats": floats, "codec": res.codec}
    fp16 = b"".join(tensor_bytes(t.to(torch.float16)) for t in sd.values() if t.is_floating_point())
    return {"run": str(run_dir), "preset": cfg.name, "cfg": cfg.to_dict(), "stats": weight_stats(sd, roles), "real": real,
            "fp16_all": [len(codecs.compress(fp16, "shuffle2+brotli-11")), len(fp16)]}


def fit(ms: list[dict]) -> dict:
    from pgolf.config import RunConfig

    tails = tails_from([m["stats"] for m in ms])
    base = {"tails": tails}
    corr: dict[str, dict[str, float]] = {}
    fratio: dict[str, dict[str, list[int]]] = {}
    for scheme in SCHEMES:
        num: dict[str, float] = {}
        den: dict[str, float] = {}
        for m in ms:
            cfg = apply_overrides(RunConfig.from_dict(m["cfg"]), [f"export.scheme={scheme}"])
            b = planner.breakdown(cfg, base)
            for gc, v in m["real"][scheme]["classes"].items():
                num[gc] = num.get(gc, 0.0) + v
                den[gc] = den.get(gc, 0.0) + b.synthetic.get(gc, 0.0)
            codec = m["real"][scheme]["codec"]
            for dt, (c, r) in m["real"][scheme]["floats"].items():
                acc = fratio.setdefault(codec, {}).setdefault(dt, [0, 0])
                acc[0] += c
                acc[1] += r
        corr[scheme] = {gc: round(num[gc] / den[gc], 4) for gc in num if den.get(gc)}
    ratios = {codec: {dt: round(c / r, 4) for dt, (c, r) in d.items() if r} for codec, d in fratio.items()}
    c16 = sum(m["fp16_all"][0] for m in ms) / max(sum(m["fp16_all"][1] for m in ms), 1)
    ratios.setdefault("shuffle2+brotli-11", {})["fp16_weights"] = round(c16, 4)
    return {"tails": tails, "correction": corr, "float_ratio": ratios}


def predict(m: dict, table: dict, scheme: str) -> int:
    from pgolf.config import RunConfig

    planner.load_table.cache_clear()
    cfg = apply_overrides(RunConfig.from_dict(m["cfg"]), [f"export.scheme={scheme}"])
    b = planner.breakdown(cfg, table)
    corr = table["correction"].get(scheme, {})
    fr = table["float_ratio"].get(m["real"][scheme]["codec"], {})
    return round(sum(v * corr.get(gc, 1.0) for gc, v in b.synthetic.items())
                 + sum(nb * fr.get(dt, 1.0) for dt, nb in b.passthrough.items()) + b.header)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--write", action="store_true", help="write pgolf/export/planner_table.json")
    ap.add_argument("--calib-seqs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ms = []
    for r in args.runs:
        t0 = time.perf_counter()
        ms.append(measure(r, args.calib_seqs))
        print(f"measured {r} in {time.perf_counter() - t0:.0f}s: {json.dumps(ms[-1]['stats'])}", flush=True)
    table = fit(ms)
    table["provenance"] = {
        "command": "python bench/planner_fit.py " + " ".join(map(str, args.runs)) + " --write",
        "date": time.strftime("%Y-%m-%d"),
        "checkpoints": [{"run": m["run"], "preset": m["preset"]} for m in ms],
        "note": "tails: generalized-normal shape beta (from the pooled excess kurtosis), median row std, std of log row std per group class; correction: real / "
                "synthetic compressed bytes per (scheme, class); float_ratio: compressed / raw per codec",
    }
    print(json.dumps(table, indent=1))
    rows = []
    for i, m in enumerate(ms):
        loo = fit([x for j, x in enumerate(ms) if j != i]) if len(ms) > 1 else table
        for scheme in SCHEMES:
            actual = m["real"][scheme]["model_bytes"]
            p_in, p_loo = predict(m, table, scheme), predict(m, loo, scheme)
            rows.append({"run": m["run"], "preset": m["preset"], "scheme": scheme, "actual": actual, "predicted": p_in,
                         "err": p_in / actual - 1, "predicted_loo": p_loo, "err_loo": p_loo / actual - 1})
    print("\n| checkpoint | scheme | actual model bytes | predicted (in-sample) | error | predicted (leave-one-out) | error |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} ({Path(r['run']).name}) | {r['scheme']} | {r['actual']:,} | {r['predicted']:,} | "
              f"{100 * r['err']:+.1f} % | {r['predicted_loo']:,} | {100 * r['err_loo']:+.1f} % |")
    if args.write:
        fileio.write_text(planner.TABLE_PATH, json.dumps(table, indent=1) + "\n")
        print(f"wrote {planner.TABLE_PATH}")
    if args.json:
        fileio.write_text(args.json, json.dumps({"table": table, "rows": rows, "measured": ms}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
