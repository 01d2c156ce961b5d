"""``pgolf review RECORD_DIR``: a compliance triage of a Parameter Golf records folder, executing nothing.

Reads README.md, submission.json, the logs and the script (decoded if self-extracting, ``review_decode``),
and runs the checks of ``review_numbers`` (sizes, times, claims, seeds, significance), ``review_static``
(the four legality conditions of issue #1017 and the known violations) and two here: tokenizer/dataset
changes (README: "prove with certainty that the val_bpb is correctly calculated"; CATALOGUE §4) and, with
``--data DIR``, validation documents found in the training shards (the overlap that removed PR #2130;
issue #2127).

Every check ends with one verdict — ``pass``, ``fail``, ``needs-proof`` (a construct the review cannot decide;
the submitter must prove it) or ``cannot-tell`` (input unreadable, with the reason) — and its evidence (file,
line, value). Bad input never raises. What a submission must ship fails ``files`` when it is not there: an empty
folder, no ``train_gpt.py`` (a folder of records folders names them), no or a malformed ``submission.json`` (not
JSON, truncated, the wrong shape), no log at all; an unreadable log or a log of another tool is a
``cannot-tell``. pgolf's bundles are read as the program they are: the modules in their ``FILES`` are analysed
(``train_gpt.py:pgolf/eval/bpb.py`` in the evidence), and pgolf's logs give seeds, hardware and tokenizer.
``review(...)`` returns a ``ReviewReport`` (pydantic, the ``--json`` schema); ``exit_code`` is 0 when no check
fails, 1 when one does.

The track decides which rules apply (:mod:`pgolf.tracks`; ``review_numbers``): on the record track training and
evaluation ≤ 600 s, three seeds and a significant win; on the non-record track no training limit (a run over 600 s
says so in its README), an evaluation over 600 s is ``needs-proof``, one seed, no significance test. The artifact
cap and the legality checks are the same on both. The track is where the folder lies (``records/track_*/``), else
submission.json's ``track`` (any spelling the real files use), else a pgolf log's ``track`` setting, else the record
track (the stricter); submission.json naming another track than the folder is a ``claims`` ``needs-proof``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import textwrap
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pgolf import tracks
from pgolf.errors import PgolfError
from pgolf.logformat import parse_log
from pgolf.submit import review_numbers as rn
from pgolf.submit.review_decode import Embedded, code_files, decode_script, embedded_modules, python_text
from pgolf.submit.review_static import Finding, StaticChecks

Verdict = Literal["pass", "fail", "needs-proof", "cannot-tell"]
SEVERITY = {"fail": 3, "needs-proof": 2, "cannot-tell": 1, "pass": 0}
CHECKS: dict[str, str] = {
    "files": "files present and readable",
    "artifact_size": "artifact ≤ 16,000,000 bytes, code as shipped",
    "claims": "README and submission.json match the logs",
    "seeds": "enough seeds",
    "significance": "significance (as written / as applied)",
    "train_time": "training ≤ 600 s",
    "eval_time": "evaluation ≤ 600 s",
    "outside_timers": "no work hidden outside the timers",
    "legal_causal": "1 causal",
    "legal_normalized": "2 normalized over the vocabulary",
    "legal_score_first": "3 score before update",
    "legal_single_pass": "4 single pass, no rescoring",
    "network": "no network or downloads",
    "val_in_training": "no validation data in training",
    "subset_scoring": "all of validation scored",
    "external_code": "no external binaries or uncounted native code",
    "tokenizer_dataset": "tokenizer/dataset changes proven",
    "data_overlap": "validation documents absent from training",
}
STATIC_CHECKS = ("legal_causal", "legal_normalized", "legal_score_first", "legal_single_pass", "network",
                 "val_in_training", "subset_scoring", "external_code")
KNOWN_VAL_TOKENS = {"sp1024": 61_997_056, "sp4096": 45_508_608, "sp8192": 40_538_112, "caseops": 47_851_520}
"""The smallest full-validation token count the accepted records log per dataset (after trimming to the
sequence length): fineweb10B_sp1024 62,021,632 (61,997,056 at seq 4096), sp4096 45,508,608, sp8192 40,540,160,
the CaseOps sp8192 export 47,851,520 (issue #2127: the leaky --val-docs=10000 default gives ~9.66M)."""
BOS_ID = 1
LOG_SUFFIXES = (".log", ".txt")
NOT_LOGS = {"requirements.txt"}


class Evidence(BaseModel):
    file: str
    line: int | None = None
    value: str


class CheckResult(BaseModel):
    id: str
    title: str
    verdict: Verdict
    evidence: list[Evidence]


class ReviewReport(BaseModel):
    """The ``--json`` output."""

    folder: str
    track: str
    """``10min_16mb`` or ``non_record_16mb`` (:mod:`pgolf.tracks`): the rules the folder was judged by."""
    track_from: str = ""
    """Where the track was read: ``folder path``, ``submission.json``, ``log config`` or ``default``."""
    script: str | None
    decoded_layers: list[str]
    logs: list[str]
    checks: list[CheckResult]
    counts: dict[str, int]
    exit_code: int


class SubmissionShape(BaseModel):
    """What the review reads from submission.json; other keys are allowed (CATALOGUE §1.9)."""

    model_config = ConfigDict(extra="allow")
    val_bpb: float | None = None
    val_loss: float | None = None
    bytes_total: int | None = None
    seeds: list[int | str] | dict[str, object] | None = None
    """A list of seeds, or (as some records write it) per-seed results keyed by seed."""
    seed_results: dict[str, dict] | None = None
    track: str | None = None


def _read_text(path: Path) -> tuple[str | None, str | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"{path.name}: cannot be read ({e.strerror or e})"
    if b"\x00" in data[:65536]:
        return None, f"{path.name}: binary, not a text log"
    return (python_text(data) if path.suffix == ".py" else data.decode("utf-8", errors="replace")), None


def _find_script(folder: Path) -> Path | None:
    if (folder / "train_gpt.py").is_file():
        return folder / "train_gpt.py"
    cands = sorted(p for p in folder.glob("train_gpt*.py") if "human" not in p.name and "decode" not in p.name)
    return cands[0] if cands else None


def _record_folders(folder: Path) -> list[str]:
    """Sub-folders (up to two levels down) that look like records folders: a train_gpt*.py or submission.json."""
    out = []
    for d in sorted(p for p in folder.rglob("*") if p.is_dir() and len(p.relative_to(folder).parts) <= 2):
        if (d / "submission.json").is_file() or any(d.glob("train_gpt*.py")):
            out.append(str(d.relative_to(folder)))
    return out


def _overlap(data_dir: Path) -> tuple[int, list, str | None]:
    """Train/validation overlap of a data directory by :func:`pgolf.data.overlap.find_overlap` (the
    rules training itself refuses by: exact copies and near-duplicates). Validation fingerprints come
    from the directory's own val shards (the data that is scored). Returns (validation documents, the
    overlaps, reason if it could not run)."""
    from pgolf.data.overlap import find_overlap, load_fingerprints
    from pgolf.errors import PgolfError

    val = sorted(data_dir.glob("fineweb_val_[0-9]*.bin"))
    train = sorted(data_dir.glob("fineweb_train_*.bin"))
    if not val or not train:
        return 0, [], f"{data_dir}: no fineweb_val_*.bin and fineweb_train_*.bin shards"
    try:
        fp = load_fingerprints(val)
        return fp.documents, find_overlap(train, fp), None
    except (PgolfError, OSError, ValueError) as e:
        return 0, [], " ".join(str(e).split())


class _Review:
    def __init__(self, folder: Path, data: Path | None, against: Path | None, sota: float | None = None):
        self.folder, self.data, self.against, self.sota = folder, data, against, sota
        self.findings: list[Finding] = []
        self.logs: list[rn.LogEntry] = []
        self.submission: dict | None = None
        self.readme = ""
        self.layers: list[str] = []
        self.script: Path | None = None
        self.decoded: str | None = None
        self.sources: dict[str, str] = {}
        self.shipped: dict[str, int] = {}
        self.bundle: Embedded | None = None

    def add(self, check: str, verdict: str, file: str, line: int | None, value: str) -> None:
        self.findings.append(Finding(check, verdict, file, line, value))

    # -- inputs ----------------------------------------------------------------------------------
    def load(self) -> None:
        f = self.folder
        if not any(f.iterdir()):
            self.add("files", "fail", str(f), None, "empty folder: a submission needs train_gpt.py, submission.json, "
                     "README.md and its training logs")
            return
        subs = _record_folders(f)
        if subs and _find_script(f) is None and not any(f.glob("submission*.json")):  # a folder of records folders
            self.add("files", "fail", str(f), None, "not a records folder (no train_gpt.py, no submission.json) but a "
                     f"folder of {len(subs)}: review each instead: {', '.join(subs[:6])}"
                     + (f" (+{len(subs) - 6} more)" if len(subs) > 6 else ""))
            return
        readme = next((p for p in f.iterdir() if p.name.lower() == "readme.md"), None)
        if readme is None:
            self.add("files", "cannot-tell", "README.md", None, "missing")
        else:
            text, why = _read_text(readme)
            self.readme = text or ""
            if why:
                self.add("files", "cannot-tell", readme.name, None, why)
        self._load_submission()
        self._load_logs()
        self.script = _find_script(f)
        if self.script is None:
            self.add("files", "fail", "train_gpt.py", None, "train_gpt.py missing: the code cannot be analysed or counted")
            return
        text, why = _read_text(self.script)
        if text is None:
            self.add("files", "cannot-tell", self.script.name, None, why or "unreadable")
            return
        dec = decode_script(text, f, self.script.name)
        self.layers, self.decoded = dec.layers, dec.text
        if dec.note:
            self.add("files", "cannot-tell", self.script.name, None, dec.note)
        self.sources = {self.script.name: dec.text}
        self.shipped = {self.script.name: self.script.stat().st_size}
        for name in dec.files:
            self.shipped[name] = (f / name).stat().st_size
        bundle = embedded_modules(dec.text) if not dec.note else None
        if bundle is not None:
            self.bundle = bundle
            self.layers.append(f"FILES ({len(bundle.files)} modules)")
            for rel, src in bundle.files.items():
                self.sources[f"{self.script.name}:{rel}"] = src
            if bundle.skipped:
                self.add("files", "cannot-tell", self.script.name, None, "FILES entries that are not string literals "
                         f"were not analysed: {', '.join(bundle.skipped[:5])}")
        texts = {self.script.name: dec.text, **{n: (f / n).read_text(errors="replace") for n in dec.files}}
        for rel, size in code_files(f, texts).items():
            if rel not in self.shipped:
                self.shipped[rel] = size
                if rel.endswith(".py"):
                    self.sources[rel] = (f / rel).read_text(errors="replace")
        extra = [k for k in self.shipped if k != self.script.name]
        self.add("files", "pass", self.script.name, None, f"script {self.script.name} ({' → '.join(self.layers)})"
                 + (f", code beside it: {', '.join(extra)}" if extra else ""))

    def _load_submission(self) -> None:
        p = self.folder / "submission.json"
        if not p.is_file():
            alts = sorted(self.folder.glob("submission*.json"))
            p = alts[0] if alts else p
        if not p.is_file():
            self.add("files", "fail", "submission.json", None, "missing: no claim to review")
            return
        text, why = _read_text(p)
        if text is None:
            self.add("files", "fail", p.name, None, why or "unreadable")
            return
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            trunc = " (truncated?)" if e.pos >= len(text.rstrip()) else ""
            self.add("files", "fail", p.name, e.lineno, f"not JSON: {e.msg} at line {e.lineno} column {e.colno}{trunc}")
            return
        if not isinstance(obj, dict):
            self.add("files", "fail", p.name, None, f"wrong shape: a JSON {type(obj).__name__}, not an object")
            return
        try:
            SubmissionShape.model_validate(obj)
        except ValidationError as e:
            for err in e.errors():
                self.add("files", "fail", p.name, None,
                         f"wrong shape: {'.'.join(str(x) for x in err['loc'])}: {err['msg']}")
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            obj = {k: v for k, v in obj.items() if k not in bad}
        self.submission = obj

    def _load_logs(self) -> None:
        files = sorted(p for p in self.folder.rglob("*") if p.is_file() and p.suffix in LOG_SUFFIXES
                       and p.name not in NOT_LOGS and "tokenizer" not in str(p.relative_to(self.folder)).lower()
                       and len(p.relative_to(self.folder).parts) <= 3)
        if not files:
            self.add("files", "fail", "logs", None, "no log in the folder (*.log, *.txt): the claims cannot be checked")
            return
        for p in files:
            rel = str(p.relative_to(self.folder))
            if p.stat().st_size > 64 * 1024 * 1024:
                self.add("files", "cannot-tell", rel, None, "over 64 MB, not read")
                continue
            text, why = _read_text(p)
            if text is None:
                self.add("files", "cannot-tell", rel, None, why or "unreadable")
                continue
            parsed = parse_log(text)
            if not parsed.recognized:
                if p.suffix == ".log" or "log" in p.name.lower() or "train" in p.name.lower():
                    self.add("files", "cannot-tell", rel, None, "no line of the challenge's scripts (a log of another tool?)")
                continue
            self.logs.append(rn.log_entry(rel, parsed, text))
        if not self.logs:
            self.add("files", "cannot-tell", "logs", None, "no training log of the challenge's scripts in the folder")

    # -- checks here -----------------------------------------------------------------------------
    def tokenizer(self) -> None:
        hdr: dict[str, str] = {}
        for e in self.logs:
            for k, v in e.parsed.header.items():
                hdr.setdefault(k, v)
        pg_log = next((e for e in self.logs if e.pgolf is not None), None)
        pg = pg_log.pgolf if pg_log else None
        tok = hdr.get("tokenizer_path") or (pg.tokenizer if pg else None) or ""
        data_dir = hdr.get("datasets_dir") or (pg.data if pg else None) or ""
        text = " ".join([tok, data_dir, hdr.get("val_files", "")])
        cfg_vocab = pg.setting("model.vocab_size") if pg else None
        vocab = hdr.get("vocab_size") or (str(cfg_vocab) if isinstance(cfg_vocab, int) else None) or \
            (re.search(r"fineweb_(\d+)_bpe", text) or [None, None])[1]
        caseops = any(e.parsed.events_of("byte_sidecar") for e in self.logs) or \
            hdr.get("caseops_enabled", "").lower() == "true" or "caseops" in text.lower() or \
            (self.folder / "lossless_caps.py").is_file()
        # a tokenizer named in the log that is not the challenge's fineweb_V_bpe.model, over untransformed text (no
        # casefold/CaseOps-like names, no byte sidecar): a tokenizer change whose bytes the SentencePiece tables count
        custom = bool(tok) and not caseops and not re.fullmatch(r"fineweb_\d+_bpe\.model", Path(tok).name) and \
            not re.search(r"casefold|lower|caps|nfkc|normali[sz]|transform", text, re.I)
        val_tokens = next((int(e.parsed.header["val_tokens"]) for e in self.logs
                           if e.parsed.header.get("val_tokens", "").isdigit()), None)
        key = None if custom else "caseops" if caseops else f"sp{vocab}" if vocab else None
        if val_tokens is not None and key in KNOWN_VAL_TOKENS and val_tokens < 0.99 * KNOWN_VAL_TOKENS[key]:
            self.add("subset_scoring", "fail", "log", None, f"val_tokens {val_tokens:,}: the full validation of {key} "
                     f"has ≥ {KNOWN_VAL_TOKENS[key]:,} (a 10,000-document validation is the issue #2127 leak)")
        script, lut_line = self.script.name if self.script else "train_gpt.py", None
        order = sorted(self.sources.items(), key=lambda kv: self.bundle is None or ":" not in kv[0])
        for name, src in order:  # a bundle's modules (FILES is one literal of the script), else the script first
            lut = re.search(r"is_byte\(|is_unused\(", src)
            if lut:
                script, lut_line = name, src[: lut.start()].count("\n") + 1
                break
        if not vocab and not caseops:
            self.add("tokenizer_dataset", "cannot-tell", "", None, "the logs name no tokenizer or vocabulary size")
            return
        if custom:
            self._custom_tokenizer(tok, data_dir, vocab, script, lut_line, pg_log)
            return
        if not caseops and str(vocab) in ("1024", "4096", "8192"):
            if lut_line:
                note = "the official export" if str(vocab) == "1024" else "the published re-export (repo export script)"
                self.add("tokenizer_dataset", "pass", script, lut_line, f"sp{vocab}: {note}; bytes counted with the "
                         "SentencePiece LUT (byte/unused/boundary handling)")
            else:
                self.add("tokenizer_dataset", "needs-proof", script, None, f"sp{vocab}: no SentencePiece byte LUT found; "
                         "prove how the bytes of val_bpb are counted")
            return
        proofs = {
            "scored over original bytes (byte sidecar in the log)": any(e.parsed.events_of("byte_sidecar") for e in self.logs)
            or ("val_bytes" in hdr.get("val_bytes_files", "") and hdr.get("caseops_enabled", "").lower() == "true"),
            "the transform shipped (lossless_caps.py)": (self.folder / "lossless_caps.py").is_file() or not caseops,
            "the data prep script shipped": any(self.folder.glob("prepare*.py")) or any(self.folder.glob("*tokeniz*.py")),
            "the tokenizer model shipped": any(self.folder.rglob("*.model")),
            "all 50,000 validation documents": any("total_docs:50000" in ev.text for e in self.logs
                                                   for ev in e.parsed.events) or val_tokens == KNOWN_VAL_TOKENS["caseops"],
        }
        missing = [k for k, ok in proofs.items() if not ok]
        what = "CaseOps text transform" if caseops else f"vocabulary {vocab}"
        if missing:
            self.add("tokenizer_dataset", "needs-proof", "", None, f"{what}: missing proof — " + "; ".join(missing))
        else:
            self.add("tokenizer_dataset", "pass", "", None, f"{what}: " + "; ".join(proofs))
        if caseops and (self.folder / "prepare_caseops_data.py").is_file():
            src = (self.folder / "prepare_caseops_data.py").read_text(errors="replace")
            m = re.search(r"--val-docs[\"'].*?default\s*=\s*([\d_]+)", src, re.S)
            if m and int(m.group(1).replace("_", "")) < 50_000:
                shards = hdr.get("train_shards")
                self.add("data_overlap", "needs-proof", "prepare_caseops_data.py", src[: m.start()].count("\n") + 1,
                         f"--val-docs defaults to {m.group(1)}: shards built with that default hold 80 % of validation "
                         f"in training (issue #2127); prove the runs' training shards (the log: train_shards "
                         f"{shards or '?'}, val_tokens {val_tokens or '?'}) come from the 50,000-document split")

    def _custom_tokenizer(self, tok: str, data_dir: str, vocab: str | None, lut_file: str, lut_line: int | None,
                          pg_log: rn.LogEntry | None) -> None:
        """A tokenizer the log names that is not the challenge's: proven when the log names it and its vocabulary, the
        code counts val_bpb's bytes with the SentencePiece tables, and the log's val_bpb_raw (over the documents'
        original UTF-8 bytes) shows those tables count no more bytes than the text has (``byte_ratio`` ≤ 1: the
        claimed figure is no better than the tokenizer-agnostic one; RULES.md Scoring)."""
        e = pg_log or next((x for x in self.logs if x.parsed.header.get("tokenizer_path")), self.logs[0])
        line = e.parsed.where.get("tokenizer_path") or (e.pgolf.where.get("tokenizer") if e.pgolf else None)
        at = f"{e.path}:{line}" if line else e.path
        named = f"tokenizer {tok} (not the challenge's fineweb_{vocab or 'V'}_bpe.model)" + \
            (f" and data {data_dir}" if data_dir else "")
        fin = e.parsed.final()
        raw = re.search(r"\bval_bpb_raw[:=]\s*([\d.]+)", fin.text) if fin else None
        ratio = re.search(r"\bbyte_ratio[:=]\s*([\d.]+)", fin.text) if fin else None
        why = None
        if not vocab:
            why = "the logs give no vocabulary size"
        elif lut_line is None:
            why = "no SentencePiece byte table found in the code; prove how the bytes of val_bpb are counted"
        elif raw is None or ratio is None or fin is None:
            why = "the log gives no val_bpb_raw over the original UTF-8 bytes; prove the bytes this tokenizer counts"
        elif float(ratio.group(1)) > 1.0:
            why = (f"its pieces count {float(ratio.group(1)):.6f}× the original bytes (byte_ratio, {e.path}:{fin.line}): "
                   f"the claimed val_bpb is lower than over the original text (val_bpb_raw {raw.group(1)})")
        if why is not None:
            self.add("tokenizer_dataset", "needs-proof", e.path, line, f"{named}, named at {at}: {why}")
            return
        assert fin is not None and raw is not None and ratio is not None
        self.add("tokenizer_dataset", "pass", lut_file, lut_line,
                 f"{named}, vocabulary {vocab}, named at {at}; val_bpb's bytes counted from the SentencePiece pieces "
                 f"here (byte pieces 1, control/unknown/unused 0, the leading ▁ by the previous token); no more bytes "
                 f"than the text has: val_bpb_raw {raw.group(1)} over the original UTF-8 bytes, byte_ratio "
                 f"{ratio.group(1)} ≤ 1 ({e.path}:{fin.line})")

    def overlap(self) -> None:
        if self.data is None:
            self.add("data_overlap", "cannot-tell", "", None, "not checked: pass --data DIR with the shards used")
            return
        n_val, found, why = _overlap(self.data)
        if why:
            self.add("data_overlap", "cannot-tell", str(self.data), None, why)
        elif found:
            docs = {o.val_doc for o in found}
            exact = sum(o.kind == "exact" for o in found)
            self.add("data_overlap", "fail", str(self.data), None,
                     f"{len(docs):,} of {n_val:,} validation documents appear in the training shards "
                     f"({exact} exact copies, {len(found) - exact} near-duplicates); first: {found[0].describe()}")
        else:
            self.add("data_overlap", "pass", str(self.data), None,
                     f"none of {n_val:,} validation documents appears in the training shards "
                     "(exact copies or near-duplicates, pgolf.data.provenance)")

    def track(self) -> tuple[str, str]:
        """(track, where it was read), in the module docstring's order; a submission.json naming another track than the
        folder's path is a ``claims`` finding (the folder, where the PR adds it, decides)."""
        claimed = (self.submission or {}).get("track")
        by_json = tracks.from_text(claimed)
        by_path = tracks.from_path(self.folder.resolve())
        if by_path is not None:
            if claimed is not None and by_json != by_path:
                self.add("claims", "needs-proof", "submission.json", None, f"track {claimed!r} is not the track of the "
                         f"folder it lies in ({tracks.get(by_path).folder}/): judged as {by_path}")
            return by_path, "folder path"
        if by_json is not None:
            return by_json, "submission.json"
        pg = next((e.pgolf for e in self.logs if e.pgolf is not None and e.pgolf.config is not None), None)
        by_log = tracks.from_text(pg.setting("track")) if pg is not None else None
        if by_log is not None:
            return by_log, "log config"
        return tracks.RECORD, "default"

    def run(self) -> ReviewReport:
        self.load()
        track, track_from = self.track()
        record = tracks.get(track).record
        against = self._against()
        nums = rn.Numbers(self.logs, self.submission, self.readme, self.shipped, self.decoded, record, *against,
                          sota=self.sota)
        for fn in (rn.artifact, rn.claims, rn.seeds, rn.significance, rn.times):
            self.findings += fn(nums)
        header = dict(next((e.parsed.header for e in self.logs if e.parsed.header), {}))
        pg = next((e.pgolf for e in self.logs if e.pgolf is not None and e.pgolf.config is not None), None)
        if pg is not None and isinstance(pg.setting("data.val_max_tokens"), int):  # pgolf's cut of validation
            header.setdefault("val_max_tokens", str(pg.setting("data.val_max_tokens")))
        if self.sources:
            try:
                self.findings += StaticChecks(self.sources).run(header, self.readme)
            except (RecursionError, ValueError) as e:
                for c in STATIC_CHECKS:
                    self.add(c, "cannot-tell", self.script.name if self.script else "", None,
                             f"static analysis stopped: {type(e).__name__}: {e}")
        else:
            for c in STATIC_CHECKS:
                self.add(c, "cannot-tell", "train_gpt.py", None, "no readable script to analyse")
        self.tokenizer()
        self.overlap()
        return self.report(track, track_from)

    def _against(self) -> tuple[list, str]:
        if self.against is None:
            return [], ""
        prev = _Review(self.against, None, None)
        prev._load_submission()
        prev._load_logs()
        nums = rn.Numbers(prev.logs, prev.submission, "", {}, None)
        vals = [(s, m.val_bpb, m.val_loss) for s, m, _ in rn.chosen_scores(nums)]
        return vals, self.against.name

    def report(self, track: str, track_from: str = "") -> ReviewReport:
        checks = []
        for cid, title in CHECKS.items():
            fs = [f for f in self.findings if f.check == cid]
            if not fs:
                fs = [Finding(cid, "cannot-tell", "", None, "nothing to check")]
            fs.sort(key=lambda f: -SEVERITY[f.verdict])
            verdict = fs[0].verdict
            ev = [Evidence(file=f.file, line=f.line, value=f"{f.verdict}: {f.message}") for f in fs]
            checks.append(CheckResult(id=cid, title=title, verdict=verdict, evidence=ev))
        counts = {v: sum(c.verdict == v for c in checks) for v in SEVERITY}
        return ReviewReport(folder=str(self.folder), track=track, track_from=track_from,
                            script=self.script.name if self.script else None,
                            decoded_layers=self.layers, logs=[e.path for e in self.logs], checks=checks,
                            counts=counts, exit_code=1 if counts["fail"] else 0)


def review(folder: str | Path, data: str | Path | None = None, against: str | Path | None = None,
           sota: float | None = None) -> ReviewReport:
    """Review a records folder (see the module docstring). ``against``: the previous record's folder; ``sota``:
    the record to beat as one val_bpb (the rule as written only). Raises PgolfError only when ``folder`` (or
    ``data``/``against``) is not a directory, or both ``against`` and ``sota`` are given."""
    if against is not None and sota is not None:
        raise PgolfError("give the record to beat once: --against its folder or --sota BPB, not both")
    if sota is not None and not (math.isfinite(sota) and sota > 0):
        raise PgolfError(f"--sota {sota}: not a positive val_bpb")
    paths = []
    for name, p in (("records folder", folder), ("--data", data), ("--against", against)):
        if p is None:
            paths.append(None)
            continue
        q = Path(p)
        if not q.is_dir():
            raise PgolfError(f"{q}: {name} is not a directory")
        paths.append(q)
    return _Review(paths[0], paths[1], paths[2], sota).run()


def title_width(width: int, titles: list[str]) -> int:
    """The summary's title column: the longest title, at most a third of the line."""
    return min(max(map(len, titles)), max(12, (width - 16) // 3))


def summary(rep: ReviewReport, width: int | None = None) -> str:
    """One screen for people: per check its verdict, title and the evidence that decided it (``+N`` more in
    ``--json``), wrapped to ``width`` columns (default: the terminal's, ``COLUMNS`` honoured); nothing is cut, long
    text continues on the next lines in its column."""
    width = max(width or shutil.get_terminal_size((120, 24)).columns, 40)

    def wrap(text: str, w: int, indent: str = "") -> list[str]:
        return textwrap.wrap(text, w, subsequent_indent=indent, break_long_words=True, break_on_hyphens=False) or [""]

    head = [f"pgolf review {rep.folder}", f"  track {rep.track}" + (f" ({rep.track_from})" if rep.track_from else "")
            + f"; script {rep.script or '—'}"
            + (f" ({' → '.join(rep.decoded_layers)})" if len(rep.decoded_layers) > 1 else "")
            + f"; {len(rep.logs)} log(s)"]
    lines = [x for h in head for x in wrap(h, width, "    ")]
    title_w = title_width(width, [c.title for c in rep.checks])
    ev_w = width - (2 + 11 + 1 + title_w + 1)
    for c in rep.checks:
        ev = c.evidence[0]
        where = f" [{ev.file}{':' + str(ev.line) if ev.line else ''}]" if ev.file else ""
        text = ev.value.split(": ", 1)[-1] + where + (f" (+{len(c.evidence) - 1})" if len(c.evidence) > 1 else "")
        if ev_w < 24:  # too narrow for two columns: the evidence goes under the title
            lines += wrap(f"  {c.verdict.upper()} {c.title}", width, "    ")
            lines += ["    " + x for x in wrap(text, width - 4)]
            continue
        titles, texts = wrap(c.title, title_w), wrap(text, ev_w)
        for i in range(max(len(titles), len(texts))):
            t = titles[i] if i < len(titles) else ""
            e = texts[i] if i < len(texts) else ""
            lines.append(f"  {c.verdict.upper() if i == 0 else '':11} {t:{title_w}} {e}".rstrip())
    n = rep.counts
    lines += wrap(f"  {n['fail']} fail, {n['needs-proof']} needs-proof, {n['cannot-tell']} cannot-tell, {n['pass']} "
                  f"pass → exit {rep.exit_code}   (details: --json)", width, "    ")
    return "\n".join(lines)
