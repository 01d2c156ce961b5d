"""The challenge's log lines, written and parsed in one place (CATALOGUE §1.8).

pgolf's trainer, runner and bundle print their lines with the writers below (``step_line``,
``val_line``, ``stop_line``, ``serialized_line``, ``code_line``, ``total_line``, ``final_lines``,
``kv_line``, ``header_lines``), and every reader of logs — the registry (``pgolf runs import``), the
report's run directories, ``pgolf review``, ``pgolf stats --against`` — parses with :func:`parse_log`,
which reads pgolf's logs and the official and record variants alike. The writers and the parser are
tested against each other (a round trip) and against real logs.

``parse_log(text) -> ParsedLog`` never raises on foreign text: a log from another tool comes back with
``recognized=False``. Line shapes (records' variants seen in ``records/track_10min_16mb/*``):

- training: ``step:S/N train_loss:X train_time:Tms step_avg:Ams`` (baseline, 03-17…04-09; pgolf adds
  ``tok/s`` and ``lr_mul``), ``S/N train_loss: X train_time: Tm tok/s: R`` (minutes, 04-05 onward),
  ``step:S/N loss:X t:Tms``;
- validation during training: ``step:S/N val_loss:X val_bpb:Y …`` or ``S/N val_loss: X val_bpb: Y``;
- the stop: ``stopping_early: wallclock_cap train_time:Tms step:S/N`` (also with spaces after ``:``);
- sizes: ``Serialized model[ LABEL]: N bytes``, ``Code size[ (compressed|uncompressed)]: N bytes``,
  ``Total submission size[ LABEL]: N bytes``;
- final metrics: any other line ``NAME val_loss:X val_bpb:Y [eval_time:Tms]`` (or ``NAME val_bpb:Y``) (``=``
  also accepted, e.g. ``ttt_sliding:done val_loss=… val_bpb=… elapsed=Ns``), keyed by NAME
  (``final_int8_zlib_roundtrip_exact``, ``final_int6_sliding_window``, ``legal_ttt``, ``quantized_ttt_phased``,
  ``diagnostic quantized`` …);
- times and events: ``total_eval_time:Ns``, ``gptq:reserving Ns, effective=Tms``,
  ``GPTQ:collected N Hessians in Ss`` / ``gptq:calibrated N layers in Ss`` (kind ``hessians``; ``calib_selfgen``
  when the calibration data is self-generated, as in [03-25]), ``… compile warmup done (Ss)``, ``beginning TTT
  eval timer``;
- a unix-time prefix on every line (``1776142360.538 …``, 04-13) is ignored;
- the header: the script's source (written before a line of ``=`` and ``Running Python``), ``Running Python
  V`` / ``Running PyTorch V``, ``Hyperparameters:`` followed by ``  key: value`` lines, ``key:value`` lines
  (``seed:1337``), the nvidia-smi table (GPU model and count);
- pgolf's header: ``# pgolf run <%Y-%m-%dT%H:%M:%S%z>`` (one per run appended to the file), ``# command:``,
  ``# versions: {json}``, ``# hardware: {json}``, ``# config:`` and the config's JSON, ``val_bpb:enabled
  tokenizer=PATH data=DIR``, ``precision: …``, ``resume: step:N``.

Every value keeps the 1-based line it came from (``ParsedLog.where``), so a review can cite it. Curves
(:meth:`ParsedLog.curves`) follow restarts: a step at or below the last one logged (a resumed or re-run
training appending to the same file) drops the points from that step on; a new ``# pgolf run`` header starts
the curves afresh, and its ``resume: step:N`` line keeps the earlier points up to step N.

The parser's patterns live in :class:`_Re`, so a compact ``train_gpt.py`` bundle, which calls only the
writers, leaves the parser out.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# -- writers (the training path prints with these) -----------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def step_line(step: int, iterations: int, train_loss: float, train_seconds: float, *,
              tokens_per_second: float | None = None, lr_mul: float | None = None) -> str:
    """``step:S/N train_loss:X train_time:Tms step_avg:Ams [tok/s:R lr_mul:M]`` (the root script's, plus pgolf's
    throughput and learning-rate multiplier)."""
    out = (f"step:{step}/{iterations} train_loss:{train_loss:.4f} train_time:{_ms(train_seconds)} "
           f"step_avg:{train_seconds * 1000 / max(step, 1):.2f}ms")
    if tokens_per_second is not None:
        out += f" tok/s:{tokens_per_second:.0f}"
    if lr_mul is not None:
        out += f" lr_mul:{lr_mul:.4f}"
    return out


def val_line(step: int, iterations: int, val_loss: float, val_bpb: float, train_seconds: float) -> str:
    """``step:S/N val_loss:X val_bpb:Y train_time:Tms step_avg:Ams`` (validation during training)."""
    return (f"step:{step}/{iterations} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} train_time:{_ms(train_seconds)} "
            f"step_avg:{train_seconds * 1000 / max(step, 1):.2f}ms")


def stop_line(train_seconds: float, step: int, iterations: int) -> str:
    """``stopping_early: wallclock_cap train_time:Tms step:S/N``."""
    return f"stopping_early: wallclock_cap train_time:{_ms(train_seconds)} step:{step}/{iterations}"


def trained_line(steps: int, train_seconds: float, tokens_per_second: float, stopped_by: str) -> str:
    """pgolf's ``trained: steps:N train_time:Ss tok/s:R stopped_by:WHY`` (the training clock's total)."""
    return f"trained: steps:{steps} train_time:{train_seconds:.1f}s tok/s:{tokens_per_second:.0f} stopped_by:{stopped_by}"


def serialized_line(label: str, model_bytes: int, payload_bytes: int | None = None) -> str:
    """``Serialized model LABEL: N bytes[ (payload:P)]``."""
    return f"Serialized model {label}: {model_bytes} bytes" + ("" if payload_bytes is None else f" (payload:{payload_bytes})")


def code_line(code_bytes: int) -> str:
    """``Code size: N bytes``."""
    return f"Code size: {code_bytes} bytes"


def total_line(label: str, model_bytes: int, code_bytes: int, cap: int) -> str:
    """``Total submission size LABEL: N bytes (model M + code C; cap K)``."""
    return (f"Total submission size {label}: {model_bytes + code_bytes} bytes "
            f"(model {model_bytes} + code {code_bytes}; cap {cap})")


def _opt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.8f}"


def final_lines(tag: str, val_loss: float, val_bpb: float, eval_seconds: float, *,
                val_bpb_raw: float | None = None, byte_ratio: float | None = None) -> tuple[str, str]:
    """The score as the root script prints it (``TAG val_loss:X val_bpb:Y eval_time:Tms``, 4 decimals) and
    its ``TAG_exact`` twin (8 decimals, plus pgolf's ``val_bpb_raw`` and ``byte_ratio``)."""
    return (f"{tag} val_loss:{val_loss:.4f} val_bpb:{val_bpb:.4f} eval_time:{_ms(eval_seconds)}",
            f"{tag}_exact val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f} val_bpb_raw:{_opt(val_bpb_raw)} "
            f"byte_ratio:{_opt(byte_ratio)}")


def kv_line(**pairs: Any) -> str:
    """``key:value key:value`` — the root script's header lines (``seed:1337``, ``model_params:N world_size:8``)."""
    return " ".join(f"{k}:{v}" for k, v in pairs.items())


def header_lines(command: str, versions: dict[str, Any], hardware: dict[str, Any], config_json: str) -> list[str]:
    """pgolf's run header: ``# pgolf run TIME``, ``# command:``, ``# versions:``, ``# hardware:``, ``# config:``
    followed by the config's JSON (indented, ending with a ``}`` line of its own)."""
    return [f"# pgolf run {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", "# command: " + command,
            "# versions: " + json.dumps(versions), "# hardware: " + json.dumps(hardware), "# config:\n" + config_json]


# -- the parser ----------------------------------------------------------------------------------

class _Re:
    """The parser's patterns."""

    _NUM = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"
    _STEP_TRAIN = re.compile(
        rf"^(?:step:\s*)?(\d+)/(\d+)\s+(?:train_loss|loss)[:=]\s*({_NUM})(?P<rest>.*)$")
    _STEP_VAL = re.compile(rf"^(?:step:\s*)?(\d+)/(\d+)\s+val_loss[:=]\s*({_NUM})\s+val_bpb[:=]\s*({_NUM})(?P<rest>.*)$")
    _TRAIN_TIME = re.compile(rf"\b(?:train_time|t)[:=]\s*({_NUM})\s*(ms|m|s)\b")
    _STOP = re.compile(rf"^stopping_early:\s*(\S+)\s+train_time[:=]\s*({_NUM})\s*ms(?:\s+step[:=]\s*(\d+)(?:/(\d+))?)?")
    _SERIALIZED = re.compile(r"^Serialized model(?:\s+([^:]+?))?:\s*(\d+)\s*bytes")
    _CODE = re.compile(r"^Code size(?:\s*\((\w+)\))?:\s*(\d+)\s*bytes")
    _TOTAL = re.compile(r"^Total submission size(?:\s+([^:]+?))?:\s*(\d+)\s*bytes")
    _METRIC = re.compile(rf"^(?P<name>.*?)\bval_loss[:=]\s*(?P<loss>{_NUM})(?P<mid>.*?)\bval_bpb[:=]\s*(?P<bpb>{_NUM})(?P<rest>.*)$")
    _METRIC_BPB = re.compile(rf"^(?P<name>[A-Za-z][\w .:-]*?)\s+val_bpb[:=]\s*(?P<bpb>{_NUM})(?P<rest>.*)$")
    _EVAL_MS = re.compile(rf"\b(?:eval_time|time)[:=]\s*({_NUM})\s*(ms|s)\b|\belapsed[:=]\s*({_NUM})\s*s\b")
    _TOTAL_EVAL = re.compile(rf"^total_eval_time[:=]\s*({_NUM})\s*s")
    _RESERVE = re.compile(rf"^gptq:reserving\s+({_NUM})s,\s*effective=({_NUM})ms")
    _HESSIANS = re.compile(rf"(?:hessian|calibrat).*?(?:\bin\s+|time[=:]\s*)({_NUM})\s*s\b", re.I)
    _PRECOMPUTE = re.compile(rf"precompute\b.*?\b(?:elapsed|time)[:=]\s*({_NUM})\s*s\b")
    _WARMUP_DONE = re.compile(rf"compile warmup done\s*\(({_NUM})s\)")
    _KV = re.compile(r"(?<![\w.])([A-Za-z_][A-Za-z0-9_]*)[:=](\S+)")
    _KV_SPACED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):\s+(\S+)$")
    _HP_LINE = re.compile(r"^\s{2,}([A-Za-z_][A-Za-z0-9_]*):\s?(.*)$")
    _RULE = re.compile(r"^={50,}\s*$")
    _STAMP = re.compile(r"^\d{9,10}\.\d+ ")  # a unix-time prefix some harnesses add to every line (04-13)

    # Keys read from ``key:value`` header lines (``seed:1337``, ``world_size:8 grad_accum_steps:1`` …).
    HEADER_KEYS = ("seed", "world_size", "grad_accum_steps", "max_wallclock_seconds", "iterations", "train_shards",
                   "val_tokens", "model_params", "train_seq_len", "train_batch_tokens", "vocab_size", "tokenizer_path",
                   "tokenizer_kind")
    GPU = re.compile(r"^\|\s+(\d+)\s+(NVIDIA [^|]*?)\s{2,}")
    PGOLF_RUN = re.compile(r"^# pgolf run (\S+)")
    RESUME = re.compile(r"^resume: step:(\d+)\b")
    TRAINED = re.compile(r"^trained: steps:(\d+) train_time:([\d.]+)s\b.*?(?:stopped_by:(\S+))?\s*$")
    KV_LINE = re.compile(r"^[A-Za-z_]\w*:\S+(?: [A-Za-z_]\w*:\S+)*$")


@dataclass
class Metric:
    """One evaluation line: its name, val_loss (nats/token), val_bpb, eval time if printed, line."""

    name: str
    val_loss: float | None
    val_bpb: float
    eval_ms: float | None
    line: int
    text: str

    @property
    def diagnostic(self) -> bool:
        """Printed for information, not as the score (``diagnostic …``, ``DIAGNOSTIC``, ``pre-quant…``)."""
        n = self.name.lower()
        return n.startswith(("diagnostic", "pre-quant", "pre_quant", "prequant")) or "post_ema" in n.replace(" ", "_")


@dataclass
class Event:
    """A line that matters to a review: ``kind`` (hessians, gptq_reserve, compile_warmup, eval_timer, …)."""

    kind: str
    line: int
    text: str
    seconds: float | None = None


@dataclass
class ParsedLog:
    """What a log says. Times in ms unless named ``*_seconds``; sizes in bytes; lines 1-based."""

    recognized: bool = False
    """True when at least one line of the challenge's scripts was found (a step, a metric or a size)."""
    steps: int | None = None
    """The last training step logged (from the stop line if there is one)."""
    iterations: int | None = None
    """The planned number of steps (N of ``step:S/N``)."""
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, train loss) as logged."""
    train_time_curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, train_time ms) as logged (minutes converted; 0.1 min resolution in the ``tok/s`` format)."""
    val_curve: list[tuple[int, float, float]] = field(default_factory=list)
    """(step, val_loss, val_bpb) evaluations during training."""
    train_ms: float | None = None
    """Training time: from the stop line, else the last step line's train_time."""
    stopped_early: bool = False
    """A ``stopping_early:`` line was printed (the wallclock cap ended training)."""
    metrics: dict[str, Metric] = field(default_factory=dict)
    """Final metrics by name (the last line of each name wins); insertion order = order in the log."""
    metric_lines: list[Metric] = field(default_factory=list)
    """Every metric line in order, repeats included."""
    model_bytes: dict[str, int] = field(default_factory=dict)
    """``Serialized model LABEL: N`` by LABEL; the unlabelled (raw torch.save) size under ``"raw"``."""
    total_bytes: dict[str, int] = field(default_factory=dict)
    """``Total submission size LABEL: N`` by LABEL; the unlabelled one under ``"raw"``."""
    code_bytes: dict[str, int] = field(default_factory=dict)
    """``Code size`` under ``"plain"``, ``"compressed"``, ``"uncompressed"``."""
    eval_seconds: dict[str, float] = field(default_factory=dict)
    """Eval time by metric name (from ``eval_time:``), ``"total"`` from ``total_eval_time``,
    ``"compile_warmup"`` from ``compile warmup done (Ss)``, ``"precompute"`` from ``… precompute … elapsed=Ss``."""
    settings: dict[str, str] = field(default_factory=dict)
    """Every setting the log states: the ``Hyperparameters:`` block and every line made only of ``key:value``
    tokens (the first value of a key wins); a superset of :attr:`header`."""
    header: dict[str, str] = field(default_factory=dict)
    """``key:value`` header lines and the ``Hyperparameters:`` block (values as text)."""
    code: str | None = None
    """The script source the log begins with, if it has one."""
    code_lines: int = 0
    """How many lines of the log are that source (line numbers stay those of the whole log)."""
    events: list[Event] = field(default_factory=list)
    where: dict[str, int] = field(default_factory=dict)
    """Field → line it was read from (``train_ms``, ``steps``, ``seed``, ``total_bytes:LABEL`` …)."""
    code_sha256: str | None = None
    """sha256 of the lines before the root script's line of 100 ``=`` (its source), which names the script."""
    versions: dict[str, Any] = field(default_factory=dict)
    """Library versions: pgolf's ``# versions:`` JSON, or ``Running Python V`` / ``Running PyTorch V``."""
    hardware: dict[str, Any] = field(default_factory=dict)
    """pgolf's ``# hardware:`` JSON (the last run's)."""
    gpus: dict[int, str] = field(default_factory=dict)
    """GPU index → model, from the nvidia-smi table."""
    pgolf_origin: str | None = None
    """The first ``# pgolf run TIME`` line (which run this file began with)."""
    started: str | None = None
    """TIME of the last ``# pgolf run TIME`` line."""
    command: str | None = None
    """pgolf's ``# command:`` (the last run's)."""
    config: dict[str, Any] | None = None
    """pgolf's ``# config:`` JSON (the last run's)."""
    data_dir: str | None = None
    """The data directory of pgolf's ``val_bpb:enabled tokenizer=… data=DIR`` line."""
    tokenizer: str | None = None
    """The tokenizer of that line."""
    precision: str | None = None
    """pgolf's ``precision:`` line (the dtype and why)."""
    trained: tuple[int, float, str] | None = None
    """pgolf's ``trained:`` line: (steps, training seconds, what stopped it); ``where["trained"]`` its line."""
    curve_train: list[list[float | None]] = field(default_factory=list)
    """[step, train_loss, seconds] of the last training, restarts followed (module docstring)."""
    curve_val: list[list[float | None]] = field(default_factory=list)
    """[step, val_bpb, seconds] likewise."""
    _before: tuple[list[list[float | None]], list[list[float | None]]] | None = field(default=None, repr=False)

    # -- conveniences ------------------------------------------------------------------------
    def _header_int(self, key: str) -> int | None:
        v = self.header.get(key)
        return int(v) if v is not None and re.fullmatch(r"\d+", v) else None

    @property
    def seed(self) -> int | None:
        return self._header_int("seed")

    @property
    def world_size(self) -> int | None:
        return self._header_int("world_size")

    @property
    def max_wallclock_seconds(self) -> float | None:
        v = self.header.get("max_wallclock_seconds")
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None

    def artifact_bytes(self) -> tuple[str, int] | None:
        """(label, bytes) of the submission total the log prints for the compressed artifact: the last
        labelled ``Total submission size``, else the unlabelled one when no raw model size precedes it."""
        labelled = [(k, v) for k, v in self.total_bytes.items() if k != "raw"]
        if labelled:
            return labelled[-1]
        if "raw" in self.total_bytes and "raw" not in self.model_bytes:
            return "raw", self.total_bytes["raw"]
        return None

    def final(self) -> Metric | None:
        """The score the log reports: its last non-diagnostic metric line (an ``_exact`` line of the same
        value replaces its rounded twin)."""
        cands = [m for m in self.metric_lines if not m.diagnostic]
        return cands[-1] if cands else None

    @property
    def params(self) -> int | None:
        return self._header_int("model_params")

    @property
    def dataset(self) -> str | None:
        """The dataset the header names (``train_loader:dataset:NAME`` or ``datasets_dir``)."""
        loader = self.settings.get("train_loader", "")
        if loader.startswith("dataset:"):
            return loader.split(":", 1)[1]
        d = self.settings.get("datasets_dir")
        return d.rstrip("/").rsplit("/", 1)[-1] if d else None

    @property
    def gpu(self) -> tuple[str, int] | None:
        """(model, count) of the GPUs in the nvidia-smi table."""
        return (sorted(set(self.gpus.values()))[0], len(self.gpus)) if self.gpus else None

    def curves(self) -> dict[str, list[list[float | None]]]:
        """``{"train": [[step, loss, s]], "val": [[step, bpb, s]]}`` of the last training (non-finite points left out)."""
        finite = [p for p in self.curve_train if p[1] == p[1] and abs(p[1]) != float("inf")]
        vfinite = [p for p in self.curve_val if p[1] == p[1] and abs(p[1]) != float("inf")]
        return {"train": [list(p) for p in finite], "val": [list(p) for p in vfinite]}

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]


def _embedded_code(lines: list[str]) -> tuple[str | None, int, int]:
    """The source a log carries: the lines between the last ``=====`` rule (or the start) and the rule
    that precedes ``Running Python`` (root train_gpt.py logs its code there). Returns (code, start, end)."""
    for i in range(len(lines) - 1):
        if _Re._RULE.match(lines[i]) and lines[i + 1].startswith("Running Python"):
            start = 0
            for j in range(i - 1, -1, -1):
                if _Re._RULE.match(lines[j]):
                    start = j + 1
                    break
            body = lines[start:i]
            while body and not body[-1].strip():
                body.pop()
            first = next((b.strip() for b in body if b.strip()), "")
            if not body or first.startswith("Hyperparameters"):
                return None, 0, 0
            return "\n".join(body) + "\n", start, i
    return None, 0, 0


def _to_ms(value: str, unit: str) -> float:
    v = float(value)
    return v * 60000.0 if unit == "m" else v * 1000.0 if unit == "s" else v


def _metric_name(prefix: str) -> str:
    toks = prefix.strip().split()
    while toks and re.fullmatch(rf"[A-Za-z_]+[:=]{_Re._NUM}", toks[-1]):  # drop trailing key:number tokens
        toks.pop()
    name = " ".join(toks).rstrip(":").strip()
    return name or "val"


def add_point(curve: list[list[float | None]], point: list[float | None]) -> None:
    """Append ``point`` (step first); a step at or below the last one means the log restarted there (a
    resumed or re-run training appends to the same file), so the points from that step on are dropped."""
    step = point[0]
    while curve and curve[-1][0] >= step:  # type: ignore[operator]
        curve.pop()
    curve.append(point)


def _json_object(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _pgolf_header(out: ParsedLog, lines: Sequence[str], idx: int) -> int:
    """Read pgolf's header line at ``idx`` (``# …``); returns how many lines it took (0: not one)."""
    line = lines[idx]
    if m := _Re.PGOLF_RUN.match(line):  # a new run appended: its curves start afresh unless it resumes
        out.pgolf_origin = out.pgolf_origin or line.strip()
        out.started = m.group(1)
        out._before = (out.curve_train, out.curve_val)
        out.curve_train, out.curve_val = [], []
        return 1
    if line.startswith("# command: "):
        out.command = line[len("# command: "):].rstrip()
        return 1
    if line.startswith("# versions: "):
        out.versions.update(_json_object(line[len("# versions: "):]))
        return 1
    if line.startswith("# hardware: "):
        out.hardware = _json_object(line[len("# hardware: "):])
        out.where["hardware"] = idx + 1
        return 1
    if line.rstrip() == "# config:":
        out.where["config"] = idx + 1
        end = idx + 1
        while end < len(lines) and lines[end].rstrip() != "}":
            end += 1
        out.config = _json_object("\n".join(lines[idx + 1:end + 1])) or None
        return end + 1 - idx
    return 0


def parse_log(text: str) -> ParsedLog:
    """Parse one log's text. Never raises on unexpected content; see the module docstring."""
    out = ParsedLog()
    lines = [_Re._STAMP.sub("", ln, count=1) for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out.code, code_start, code_end = _embedded_code(lines)
    out.code_lines = code_end - code_start
    sep = next((i for i, ln in enumerate(lines) if ln.strip() == "=" * 100), None)
    if sep:
        out.code_sha256 = hashlib.sha256("\n".join(lines[:sep]).encode()).hexdigest()
    in_hp = False
    skip = 0
    for idx in range(len(lines)):
        if skip:
            skip -= 1
            continue
        if code_start <= idx < code_end:
            continue
        raw = lines[idx]
        no = idx + 1
        line = raw.strip()
        if not line:
            in_hp = False
            continue
        if line.startswith("# "):
            took = _pgolf_header(out, lines, idx)
            if took:
                skip = took - 1
                continue
        if m := _Re.GPU.match(line):
            out.gpus[int(m.group(1))] = m.group(2).strip()
            continue
        if line.startswith(("Running Python ", "Running PyTorch ")) and len(line.split()) > 2:
            out.versions.setdefault("python" if line.startswith("Running Python") else "torch", line.split()[2])
            continue
        if line.startswith("val_bpb:enabled ") and " data=" in line:
            out.where.setdefault("tokenizer", no)
            head, out.data_dir = line.split(" data=", 1)
            out.tokenizer = head.split("tokenizer=", 1)[1] if "tokenizer=" in head else None
            continue
        if (m := _Re.RESUME.match(line)) and out._before is not None:  # continues the previous run's curves
            upto = int(m.group(1))
            out.curve_train = [p for p in out._before[0] if p[0] <= upto] + out.curve_train  # type: ignore[operator]
            out.curve_val = [p for p in out._before[1] if p[0] <= upto] + out.curve_val  # type: ignore[operator]
            continue
        if m := _Re.TRAINED.match(line):
            out.trained = (int(m.group(1)), float(m.group(2)), m.group(3) or "?")
            out.where["trained"] = no
            continue
        if line.startswith(("export: hessians from", "calibration:")):  # pgolf's; still read as events below
            out.events.append(Event("calibration", no, line))
        if line.startswith("precision: "):
            out.precision = line[len("precision: "):]
            continue
        if line == "Hyperparameters:":
            in_hp = True
            continue
        if in_hp:
            m = _Re._HP_LINE.match(raw)
            if m:
                out.header.setdefault(m.group(1), m.group(2).strip())
                out.settings.setdefault(m.group(1), m.group(2).strip())
                out.where.setdefault(m.group(1), no)
                continue
            in_hp = False
        m = _Re._STEP_VAL.match(line)
        if m:
            out.recognized = True
            step, n = int(m.group(1)), int(m.group(2))
            out.val_curve.append((step, float(m.group(3)), float(m.group(4))))
            out.iterations = n
            tm = _Re._TRAIN_TIME.search(m.group("rest"))
            if tm:
                out.train_time_curve.append((step, _to_ms(tm.group(1), tm.group(2))))
            add_point(out.curve_val, [step, float(m.group(4)), _to_ms(tm.group(1), tm.group(2)) / 1000 if tm else None])
            continue
        m = _Re._STEP_TRAIN.match(line)
        if m:
            out.recognized = True
            step, n = int(m.group(1)), int(m.group(2))
            out.train_loss.append((step, float(m.group(3))))
            out.iterations = n
            if out.steps is None or step >= out.steps:
                out.steps = step
                out.where["steps"] = no
            tm = _Re._TRAIN_TIME.search(m.group("rest"))
            if tm:
                ms = _to_ms(tm.group(1), tm.group(2))
                out.train_time_curve.append((step, ms))
                if not out.stopped_early:
                    out.train_ms = ms
                    out.where["train_ms"] = no
            add_point(out.curve_train, [step, float(m.group(3)), _to_ms(tm.group(1), tm.group(2)) / 1000 if tm else None])
            continue
        m = _Re._STOP.match(line)
        if m:
            out.recognized = True
            out.stopped_early = True
            out.train_ms = float(m.group(2))
            out.where["train_ms"] = out.where["stopped_early"] = no
            if m.group(3):
                out.steps = int(m.group(3))
                out.where["steps"] = no
            if m.group(4):
                out.iterations = int(m.group(4))
            out.events.append(Event("stop", no, line, out.train_ms / 1000.0))
            continue
        m = _Re._SERIALIZED.match(line)
        if m:
            out.recognized = True
            label = (m.group(1) or "raw").strip()
            out.model_bytes[label] = int(m.group(2))
            out.where[f"model_bytes:{label}"] = no
            continue
        m = _Re._CODE.match(line)
        if m:
            out.recognized = True
            label = m.group(1) or "plain"
            out.code_bytes[label] = int(m.group(2))
            out.where[f"code_bytes:{label}"] = no
            continue
        m = _Re._TOTAL.match(line)
        if m:
            out.recognized = True
            label = (m.group(1) or "raw").strip()
            out.total_bytes.pop(label, None)  # keep the order of the last occurrence
            out.total_bytes[label] = int(m.group(2))
            out.where[f"total_bytes:{label}"] = no
            continue
        m = _Re._METRIC.match(line) or _Re._METRIC_BPB.match(line)
        if m and not line.startswith(("step:", "val_bpb:")) and not any(c in line for c in "{}\"'"):
            out.recognized = True
            name = _metric_name(m.group("name"))
            mid = m.group("mid") if "mid" in m.groupdict() else ""
            em = _Re._EVAL_MS.search(m.group("rest")) or _Re._EVAL_MS.search(mid)
            eval_ms = None
            if em:
                eval_ms = _to_ms(em.group(1), em.group(2)) if em.group(1) else float(em.group(3)) * 1000.0
            loss = float(m.group("loss")) if "loss" in m.groupdict() else None
            met = Metric(name, loss, float(m.group("bpb")), eval_ms, no, line)
            out.metric_lines.append(met)
            out.metrics.pop(name, None)
            out.metrics[name] = met
            if eval_ms is not None:
                out.eval_seconds[name] = eval_ms / 1000.0
            continue
        m = _Re._TOTAL_EVAL.match(line)
        if m:
            out.eval_seconds["total"] = float(m.group(1))
            out.where["eval_seconds:total"] = no
            continue
        m = _Re._RESERVE.match(line)
        if m:
            out.events.append(Event("gptq_reserve", no, line, float(m.group(1))))
            out.header.setdefault("gptq_effective_ms", m.group(2))
            continue
        low = line.lower()
        if ("hessian" in low or "calibrat" in low) and ("autoregressive" in low or "self-gen" in low or "selfgen" in low):
            out.events.append(Event("calib_selfgen", no, line))
        m = _Re._HESSIANS.search(line)
        if m and ("gptq" in low or "hessian" in low):
            out.events.append(Event("hessians", no, line, float(m.group(1))))
            continue
        if ("gptq" in low or "hessian" in low) and ("collecting" in low or "calibrating" in low):
            out.events.append(Event("hessians_start", no, line))
            continue
        m = _Re._PRECOMPUTE.search(line)
        if m:
            out.events.append(Event("precompute", no, line, float(m.group(1))))
            out.eval_seconds.setdefault("precompute", 0.0)
            out.eval_seconds["precompute"] += float(m.group(1))
            continue
        m = _Re._WARMUP_DONE.search(line)
        if m:
            out.eval_seconds["compile_warmup"] = float(m.group(1))
            out.where["eval_seconds:compile_warmup"] = no
            out.events.append(Event("compile_warmup", no, line, float(m.group(1))))
            continue
        if "warming up compile" in line or "warmup" in line.lower() and "compile" in line.lower():
            out.events.append(Event("compile_warmup_start", no, line))
            continue
        if line.startswith("beginning TTT eval timer") or "eval timer" in line.lower():
            out.events.append(Event("eval_timer", no, line))
            continue
        if line.startswith("val_bpb:byte_sidecar"):
            out.events.append(Event("byte_sidecar", no, line))
            continue
        if line.startswith("warmup_step") or line.startswith(("tttg:", "ttp:", "ttpp:", "ttpr:")):
            continue
        if _Re.KV_LINE.match(line):
            for tok in line.split(" "):
                key, value = tok.split(":", 1)
                out.settings.setdefault(key, value)
        pairs = _Re._KV.findall(line)
        m = _Re._KV_SPACED.match(line)
        if m:
            pairs.append((m.group(1), m.group(2)))
        if line.startswith("val_loader:"):
            pairs = [("val_tokens" if k == "tokens" else k, v) for k, v in pairs]
        for k, v in pairs:
            if k in _Re.HEADER_KEYS and k not in out.header:
                out.header[k] = v.rstrip(",")
                out.where[k] = no
    return out
