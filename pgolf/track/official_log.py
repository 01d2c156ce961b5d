"""A reader for training logs in the challenge's format, so existing results join the registry.

Source: the root ``train_gpt.py`` of openai/parameter-golf (its ``log0`` lines) and the records'
logs (``records/track_10min_16mb/*/train*.log``). pgolf's own ``train.log`` writes the same step lines,
so the curves of pgolf runs are read here too. Lines understood (``N/M`` = step/iterations):

    step:N/M train_loss:X train_time:Tms step_avg:Ams          (root script; pgolf adds tok/s, lr_mul)
    N/M train_loss: X train_time: T.Tm tok/s: R                 (later records: minutes, no "step:")
    step:N/M val_loss:X val_bpb:Y train_time:Tms step_avg:Ams   (later records: "N/M val_loss: X val_bpb: Y")
    stopping_early: wallclock_cap train_time:Tms step:N/M
    Serialized model LABEL: N bytes / Code size: N bytes / Total submission size LABEL: N bytes
    LABEL val_loss:X val_bpb:Y [eval_time:Tms]                 (final scores; the last one that is not a
                                                                diagnostic or pre-quantization figure wins)
    seed:N / model_params:N / world_size:N / "Hyperparameters:" followed by "  key: value" lines

The root script logs its own source code first, up to a line of 100 "="; its sha256 identifies the
script. The nvidia-smi table gives the GPU model and count.

Note for the lead: ``pgolf.submit.logparse`` (review's branch) parses the same lines for the review;
the two should become one parser at merge.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_TRAIN = re.compile(rf"^(?:step:)?(\d+)/(\d+) train_loss:\s*({_NUM}) train_time:\s*({_NUM})(ms|m|s)\b")
_VAL = re.compile(rf"^(?:step:)?(\d+)/(\d+) val_loss:\s*({_NUM}) val_bpb:\s*({_NUM})"
                  rf"(?: train_time:\s*({_NUM})(ms|m|s)\b)?")
_STOP = re.compile(r"^stopping_early: wallclock_cap train_time:\s*(\d+)ms step:\s*(\d+)/(\d+)")
_TOTAL = re.compile(r"^Total submission size(?: ([^:]+))?: (\d+) bytes")
_SERIALIZED = re.compile(r"^Serialized model(?: ([^:]+))?: (\d+) bytes")
_CODE = re.compile(r"^Code size(?: \((compressed|uncompressed)\))?: (\d+) bytes")
_FINAL = re.compile(rf"^([A-Za-z][\w\-+ ]*?) val_loss:\s*({_NUM}) val_bpb:\s*({_NUM})(.*)$")
_EVAL_TIME = re.compile(r"eval_time:\s*(\d+(?:\.\d+)?)ms")
_NOT_FINAL = re.compile(r"diagnostic|pre[-_ ]?quant", re.IGNORECASE)
_GPU = re.compile(r"^\|\s+(\d+)\s+(NVIDIA [^|]*?)\s{2,}")
_HYPER = re.compile(r"^\s+([A-Za-z_][\w.]*):\s?(.*)$")
_KV_LINE = re.compile(r"^[A-Za-z_]\w*:\S+(?: [A-Za-z_]\w*:\S+)*$")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class Final:
    label: str
    val_loss: float
    val_bpb: float
    eval_seconds: float | None


@dataclass
class OfficialLog:
    train: list[list[float]] = field(default_factory=list)
    """[step, train_loss, seconds] per logged training step."""
    val: list[list[float]] = field(default_factory=list)
    """[step, val_bpb, seconds] per periodic validation (seconds may be None)."""
    val_loss: list[float] = field(default_factory=list)
    iterations: int | None = None
    stopped_early: bool = False
    train_seconds: float | None = None
    artifact_bytes: int | None = None
    artifact_label: str | None = None
    model_bytes: int | None = None
    code_bytes: int | None = None
    final: Final | None = None
    seed: int | None = None
    params: int | None = None
    world_size: int | None = None
    dataset: str | None = None
    hyperparameters: dict[str, str] = field(default_factory=dict)
    code_sha256: str | None = None
    gpu: str | None = None
    gpu_count: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def steps(self) -> int | None:
        last = [int(r[0]) for r in self.train] + [int(r[0]) for r in self.val]
        return max(last) if last else None

    @property
    def recognized(self) -> bool:
        """True when the text has at least one training step or a final score (i.e. it is a training log)."""
        return bool(self.train) or self.final is not None


def _seconds(value: str | None, unit: str | None) -> float | None:
    return None if value is None else float(value) * _UNIT_S[unit or "ms"]


def add_point(curve: list[list[float]], point: list[float]) -> None:
    """Append ``point`` (step first); a step at or below the last one means the log restarted there (a
    resumed or re-run training appends to the same file), so the points from that step on are dropped."""
    step = point[0]
    while curve and curve[-1][0] >= step:
        curve.pop()
    curve.append(point)


def parse_official_log(text: str) -> OfficialLog:
    """Parse a challenge-format (or pgolf) training log. Unknown lines are ignored."""
    out = OfficialLog()
    lines = text.splitlines()
    sep = next((i for i, line in enumerate(lines) if line.strip() == "=" * 100), None)
    if sep is not None and sep > 0:
        out.code_sha256 = hashlib.sha256("\n".join(lines[:sep]).encode()).hexdigest()
        lines = lines[sep:]
    in_hyper = False
    gpus: dict[int, str] = {}
    code_sizes: dict[str, int] = {}
    for raw in lines:
        line = raw.rstrip()
        if in_hyper:
            m = _HYPER.match(line)
            if m:
                out.hyperparameters[m.group(1)] = m.group(2).strip()
                continue
            in_hyper = False
        if line == "Hyperparameters:":
            in_hyper = True
            continue
        if m := _TRAIN.match(line):
            add_point(out.train, [int(m.group(1)), float(m.group(3)), _seconds(m.group(4), m.group(5))])
            out.iterations = int(m.group(2))
        elif m := _VAL.match(line):
            add_point(out.val, [int(m.group(1)), float(m.group(4)), _seconds(m.group(5), m.group(6))])
            out.val_loss.append(float(m.group(3)))
            out.iterations = int(m.group(2))
        elif m := _STOP.match(line):
            out.stopped_early = True
            out.train_seconds = int(m.group(1)) / 1000
        elif m := _TOTAL.match(line):
            out.artifact_label, out.artifact_bytes = (m.group(1) or "").strip() or None, int(m.group(2))
        elif m := _SERIALIZED.match(line):
            out.model_bytes = int(m.group(2))
        elif m := _CODE.match(line):
            code_sizes[m.group(1) or "plain"] = int(m.group(2))
        elif (m := _FINAL.match(line)) and not _NOT_FINAL.search(m.group(1)):
            t = _EVAL_TIME.search(m.group(4))
            out.final = Final(m.group(1).strip(), float(m.group(2)), float(m.group(3)),
                              float(t.group(1)) / 1000 if t else None)
        elif m := _GPU.match(line):
            gpus[int(m.group(1))] = m.group(2).strip()
        elif line.startswith("Running Python "):
            out.versions["python"] = line.split()[2]
        elif line.startswith("Running PyTorch "):
            out.versions["torch"] = line.split()[2]
        elif _KV_LINE.match(line):
            for tok in line.split(" "):
                key, value = tok.split(":", 1)
                out.hyperparameters.setdefault(key, value)
    hp = out.hyperparameters
    for key, attr in (("seed", "seed"), ("model_params", "params"), ("world_size", "world_size")):
        if re.fullmatch(r"\d+", hp.get(key, "")):
            setattr(out, attr, int(hp[key]))
    if hp.get("train_loader", "").startswith("dataset:"):
        out.dataset = hp["train_loader"].split(":", 1)[1]
    elif hp.get("datasets_dir"):
        out.dataset = hp["datasets_dir"].rstrip("/").rsplit("/", 1)[-1]
    out.code_bytes = code_sizes.get("compressed", code_sizes.get("plain"))
    if out.train_seconds is None and out.train:
        out.train_seconds = out.train[-1][2]
    if gpus:
        out.gpu_count, out.gpu = len(gpus), sorted(set(gpus.values()))[0]
    return out
