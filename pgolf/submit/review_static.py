"""Static checks of a submission's code for the legality conditions and the known violations.

Reads the decoded sources (``review_decode``) with ``ast``; executes nothing. Each finding is
``(check, verdict, file, line, message)`` with verdict ``pass``, ``fail`` or ``needs-proof``; a pass only
states what was verified ("all 3 attention calls pass causal=True"), never more. Sources of the rules:
RULES.md, CATALOGUE §4 (issue #1017's four conditions, README FAQ on TTT, #677) and the maintainers'
rulings cited per check:

- ``legal_causal``: attention calls must be causal; an n-gram key that hashes the *target* token
  (``ctx_hash ^ (tgt * prime)``) reads the future (ruled out on PR #779; PRs #770, #786, #797 flagged).
- ``legal_normalized``: a probability taken as a ratio of two hashed count tables is not a distribution over
  the vocabulary (PRs #886, #1147: it sums to ≫ 1); a mixture with another predictor needs proof that it is
  normalized and that its weight ignores the target (PPM-D byte mixtures #1835…#2098 were all excluded).
- ``legal_score_first`` / ``legal_single_pass``: from ``review_flow`` (shapes A…D, rescoring, epoch loops).
- ``network``: urllib/requests/huggingface_hub/… calls, ``subprocess``/``os.system`` running curl, wget, git,
  pip, huggingface-cli (rules: no network or downloads at evaluation).
- ``external_code``: other binaries run or loaded (``lrzip`` [04-27a], ``g++`` + ctypes [04-09a]); nvidia-smi
  (logging only) is allowed.
- ``subset_scoring``: validation sliced to a subset by a constant or a limit/fraction setting (the log's value of
  that setting decides), ``total_docs`` below 50,000 in the log.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from pgolf.submit import review_flow as rf
from pgolf.submit.review_decode import parse_lenient
from pgolf.submit.review_settings import FALSY, effective_settings

NET_MODULES = {"urllib", "urllib2", "urllib3", "requests", "http", "httpx", "aiohttp", "socket", "ftplib",
               "huggingface_hub", "datasets", "wget", "gdown", "boto3", "botocore", "paramiko", "pycurl", "websocket"}
NET_FUNCS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "load_dataset", "download_url_to_file",
             "create_connection"}
NET_BINS = {"curl", "wget", "git", "pip", "pip3", "huggingface-cli", "hf", "aws", "gsutil", "scp", "rsync", "nc",
            "ssh", "apt", "apt-get", "conda", "uv"}
ALLOWED_BINS = {"nvidia-smi", "pyminify"}
"""nvidia-smi logs the hardware; pyminify only measures a compressed code size (reported by the artifact check)."""
RUNNERS = {"run", "call", "check_call", "check_output", "Popen", "system", "popen", "getoutput", "getstatusoutput"}
SUBSET_KNOB = re.compile(r"(max|limit|frac|fraction|subset|n_eval|eval_docs|val_docs|num_val|val_max|max_val)", re.I)
TARGET_NAME = re.compile(r"^(y|tgt|tgts|target|targets|tgt_\w+|\w*_tgt|target_\w+|next_tok\w*|y_np|y_ids|tgt_ids)$")


@dataclass
class Finding:
    check: str
    verdict: str  # pass | fail | needs-proof
    file: str
    line: int | None
    message: str


def _const_env(tree: ast.Module) -> dict[str, object]:
    """Module-level ``NAME = <constant>`` (minified records write ``_B=True``)."""
    out: dict[str, object] = {}
    for s in tree.body:
        if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant):
            for t in s.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = s.value.value
    return out


def _literal(node: ast.AST | None, env: dict[str, object]):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    return ...


def _always_raises(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """The function's body ends in ``raise`` and returns nowhere (a bundle's stub of switched-off code)."""
    body = [s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    return bool(body) and isinstance(body[-1], ast.Raise) and \
        not any(isinstance(n, ast.Return | ast.Yield | ast.YieldFrom) for n in ast.walk(fn))


def _literal_tuple(node: ast.AST | None, env: dict[str, object]) -> tuple | None:
    """A tuple of int literals (``(-1, 0)``), else None."""
    def one(e: ast.AST):
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.USub):
            v = _literal(e.operand, env)
            return -v if isinstance(v, int) else None
        v = _literal(e, env)
        return v if isinstance(v, int) else None

    if isinstance(node, ast.Tuple):
        vals = tuple(one(e) for e in node.elts)
        if all(v is not None for v in vals):
            return vals
    return None


def _call_name(c: ast.Call) -> str:
    return rf._dotted(c.func) or ""


def _aliases(tree: ast.Module) -> dict[str, str]:
    out: dict[str, str] = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            for a in n.names:
                out[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(n, ast.ImportFrom) and n.module and not n.level:
            for a in n.names:
                out[a.asname or a.name] = f"{n.module}.{a.name}"
    return out


def _command(c: ast.Call, env: dict[str, object]) -> str | None:
    """The command line a subprocess/os call runs, when it is written as literals."""
    if not c.args:
        return None
    a = c.args[0]
    if isinstance(a, ast.List | ast.Tuple):
        parts = []
        for e in a.elts:
            v = _literal(e, env)
            if isinstance(v, str):
                parts.append(v)
            elif rf._dotted(e) == "sys.executable":
                parts.append("python")
            else:
                parts.append("?")
        return " ".join(parts)
    v = _literal(a, env)
    return v if isinstance(v, str) else None


class StaticChecks:
    def __init__(self, sources: dict[str, str]):
        self.sources = sources
        self.trees: dict[str, ast.Module] = {}
        self.findings: list[Finding] = []
        self.unparsed: dict[str, str] = {}
        for name, text in sources.items():
            try:
                self.trees[name], _ = parse_lenient(text)
            except SyntaxError as e:
                self.unparsed[name] = f"{name}: not parseable Python ({e.msg}, line {e.lineno})"
            except (ValueError, RecursionError, MemoryError) as e:
                self.unparsed[name] = f"{name}: not parseable Python ({type(e).__name__})"
        self.prog = rf.Program(self.trees, {k: v for k, v in sources.items() if k in self.trees})
        self.prog.run()
        self.origins = rf.Origins(self.prog)
        self.settings: dict[str, tuple[str, str]] = {}

    def add(self, check: str, verdict: str, file: str, line: int | None, message: str,
            node: ast.AST | None = None, func: rf.Func | None = None, callee: str | None = None) -> None:
        if verdict != "pass" and (node is not None or func is not None):
            off = self.disabled(file, node, func) or (self._callee_disabled(callee) if callee else None)
            if off and off.endswith("(log)"):
                verdict, message = "pass", f"not run in the logged runs ({off}): {message}"
            elif off:  # switched off by the README's command or the code's default; the logs do not say
                verdict, message = "needs-proof", f"switched off by {off}, which the logs do not show: {message}"
        self.findings.append(Finding(check, verdict, file, line, message))

    # -- code switched off in the logged runs ------------------------------------------------------
    def _parents(self, file: str) -> dict[int, ast.AST]:
        cache = self.__dict__.setdefault("_pmap", {})
        if file not in cache:
            pm: dict[int, ast.AST] = {}
            for n in ast.walk(self.trees.get(file, ast.Module(body=[], type_ignores=[]))):
                for c in ast.iter_child_nodes(n):
                    pm[id(c)] = n
            cache[file] = pm
        return cache[file]

    def _flags(self, test: ast.AST, func: ast.AST | None) -> list[tuple[str, bool]]:
        """(setting, needs_positive) the test requires: ``h.x``, ``x > 0``, ``a and b``, a local set from them."""
        if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
            return [f for v in test.values for f in self._flags(v, func)]
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Gt | ast.NotEq) \
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value in (0, 0.0):
            return self._flags(test.left, func)
        if isinstance(test, ast.Attribute):
            return [(test.attr.lower(), True)]
        if isinstance(test, ast.Call) and rf._dotted(test.func) == "getattr" and len(test.args) >= 2 and \
                isinstance(test.args[1], ast.Constant):
            return [(str(test.args[1].value).lower(), True)]
        if isinstance(test, ast.Name) and func is not None:
            for n in ast.walk(func):
                if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == test.id for t in n.targets):
                    return self._flags(n.value, None)
        return []

    def _callee_disabled(self, name: str, depth: int = 0) -> str | None:
        """Every validation-fed update inside the functions called ``name`` sits in switched-off code."""
        reasons = []
        for g in self.prog.by_name.get(name, []):
            for e in g.events:
                if e.kind == "update" and e.val_fed:
                    reasons.append(self.disabled(g.file, e.node, None))
                elif e.kind == "call" and depth < 3 and any(self.prog.has_val_update(h)
                                                           for h in self.prog.by_name.get(e.callee or "", [])):
                    reasons.append(self.disabled(g.file, e.node, None) or self._callee_disabled(e.callee or "", depth + 1))
        return reasons[0] if reasons and all(reasons) else None

    def disabled(self, file: str, node: ast.AST | None, func: rf.Func | None, depth: int = 0) -> str | None:
        """Why the code at ``node`` did not run in the logged runs (an ``if`` on a setting that was off), or None."""
        if node is not None:
            pm = self._parents(file)
            child, cur = node, pm.get(id(node))
            while cur is not None:
                if isinstance(cur, ast.If) and any(child is b for b in cur.body):
                    for flag, _ in self._flags(cur.test, func.node if func else None):
                        val = self.settings.get(flag)
                        if val is not None and val[0].strip().lower() in FALSY:
                            return f"{flag}={val[0]!r} ({val[1]})"
                if isinstance(cur, ast.IfExp) and child is cur.body:
                    for flag, _ in self._flags(cur.test, func.node if func else None):
                        val = self.settings.get(flag)
                        if val is not None and val[0].strip().lower() in FALSY:
                            return f"{flag}={val[0]!r} ({val[1]})"
                child, cur = cur, pm.get(id(cur))
        if func is not None and depth < 3:
            sites = [(g, e) for g in self.prog.funcs for e in g.events if e.kind == "call" and e.callee == func.name]
            if sites:
                reasons = [self.disabled(g.file, e.node, g, depth + 1) for g, e in sites]
                if all(reasons):
                    return reasons[0]
        return None

    # -- helpers ---------------------------------------------------------------------------------
    def _func_at(self, file: str, line: int) -> rf.Func | None:
        best = None
        for f in self.prog.funcs:
            n = f.node
            if f.file == file and n.lineno <= line <= (n.end_lineno or n.lineno):
                if best is None or n.lineno >= best.node.lineno:
                    best = f
        return best

    def _in_scorer(self, file: str, line: int) -> bool:
        """In a function that scores validation, or is handed validation-derived data (``_ppm_mixture_bpb(tgt, lp)``)."""
        f = self._func_at(file, line)
        while f is not None:  # a function nested in a scorer (``def loglik(w)`` inside ``mix_losses``) is part of it
            if f.tainted_params or any(e.kind == "score" and e.val_fed for e in f.events):
                return True
            f = self.prog.parent.get(id(f))
        return False

    def _at_eval(self, file: str, call: ast.Call) -> bool:
        """Does this call run in the evaluation phase? In a function that scores validation or is handed
        validation data, after the last training update of its function, or with validation in its arguments."""
        if any(rf.VAL_NAME.match(rf._ident(rf._dotted(n) or "")) for a in call.args + [k.value for k in call.keywords]
               for n in ast.walk(a) if isinstance(n, ast.Name | ast.Attribute)):
            return True
        f = self._func_at(file, call.lineno)
        if f is None:
            return False
        if f.tainted_params or any(e.kind == "score" and e.val_fed for e in f.events):
            return True
        train = [e.line for e in f.events if e.kind == "update" and not e.val_fed]
        return bool(train) and call.lineno > max(train)

    # -- network and binaries ------------------------------------------------------------------------
    def network_and_binaries(self) -> None:
        net, ext = 0, 0
        for file, tree in self.trees.items():
            env, aliases = _const_env(tree), _aliases(tree)
            for c in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                name = _call_name(c)
                root = name.split(".")[0]
                full = aliases.get(root, root) + name[len(root):]
                last = name.rsplit(".", 1)[-1]
                mod_root = full.split(".")[0]
                if mod_root in NET_MODULES or last in NET_FUNCS or full.startswith("torch.hub."):
                    net += 1
                    v = "fail" if self._at_eval(file, c) else "needs-proof"
                    self.add("network", v, file, c.lineno, f"network call {full}(…)"
                             + ("" if v == "fail" else "; prove it does not run during evaluation"))
                    continue
                if (mod_root in ("subprocess", "os", "commands") and last in RUNNERS) or full in ("os.execv", "os.execvp"):
                    cmd = _command(c, env)
                    prog = (cmd or "?").split()[0].rsplit("/", 1)[-1] if cmd else "?"
                    words = set((cmd or "").replace("/", " ").split())
                    if prog in NET_BINS or words & {"curl", "wget", "pip", "huggingface-cli"}:
                        net += 1
                        self.add("network", "fail" if self._at_eval(file, c) else "needs-proof", file,
                                 c.lineno, f"runs `{cmd}` (network or package download)")
                    elif prog not in ALLOWED_BINS and not words & ALLOWED_BINS:
                        ext += 1
                        self.add("external_code", "needs-proof", file, c.lineno,
                                 f"runs an external program `{cmd or ast.unparse(c.args[0])[:60] if c.args else '?'}`; "
                                 "its code is not in the artifact bytes: prove it adds no compute or capability")
                elif full.startswith("ctypes.") and last in ("CDLL", "LoadLibrary", "PyDLL", "cdll", "WinDLL") \
                        or last == "load_library" or ("cpp_extension" in full and last in ("load", "load_inline")):
                    ext += 1
                    self.add("external_code", "needs-proof", file, c.lineno,
                             f"loads or compiles native code ({full}); count its source in the artifact and prove "
                             "what it computes")
        if not net:
            self.add("network", "pass", "", None, "no network module call, download function or subprocess running "
                     "curl/wget/git/pip/huggingface-cli in the code")
        if not ext:
            self.add("external_code", "pass", "", None, "no external program (besides nvidia-smi) run and no native "
                     "library loaded or compiled")

    # -- causal attention ----------------------------------------------------------------------------
    def _mask(self, expr: ast.expr, func: rf.Func | None, file: str, depth: int = 0) -> tuple[set[str], str]:
        """What an attention mask may be: {"causal"} (every value lower-triangular: a ``tril`` of diagonal ≤ 0, or
        such a mask ``&`` anything, indexed only to add axes), {"none"} (None), both, or raises
        :class:`~pgolf.submit.review_flow.Untraceable`. Returns the kinds and the evidence of the first
        causal origin."""
        if depth > 24:
            raise rf.Untraceable("the mask's origins go deeper than this review follows")
        where = f"{file}:{getattr(expr, 'lineno', '?')}"
        if isinstance(expr, ast.Constant) and expr.value is None:
            return {"none"}, ""
        if isinstance(expr, ast.Call):
            method = isinstance(expr.func, ast.Attribute) and rf._dotted(expr.func.value) not in ("torch", "np", "numpy")
            last = expr.func.attr if isinstance(expr.func, ast.Attribute) else _call_name(expr)
            if last == "tril":
                diag = next((k.value for k in expr.keywords if k.arg == "diagonal"), None)
                if diag is None:
                    pos = expr.args if method else expr.args[1:]  # x.tril(d) or torch.tril(x, d)
                    diag = pos[0] if pos else None
                d = _literal(diag, {}) if diag is not None else 0
                if isinstance(d, int) and d <= 0:
                    return {"causal"}, f"`{ast.unparse(expr)[:60]}` ({where})"
                raise rf.Untraceable(f"`{ast.unparse(expr)[:60]}` keeps a diagonal above the main one ({where})")
            if isinstance(expr.func, ast.Attribute) and last in ("to", "bool", "unsqueeze", "expand", "expand_as",
                                                                    "contiguous", "clone", "detach"):
                return self._mask(expr.func.value, func, file, depth + 1)
            funcs = self.prog.resolve(expr, file)
            if funcs:
                raising = [g.name for g in funcs if _always_raises(g.node)]
                rets = self.origins.returns(expr, file)
                if rets:
                    return self._masks(rets, depth)
                if len(raising) == len(funcs):  # a switched-off stub of a bundle: never gives a mask
                    return set(), f"{raising[0]}() only raises ({where})"
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.BitAnd):
            for side in (expr.left, expr.right):
                try:
                    kinds, ev = self._mask(side, func, file, depth + 1)
                except rf.Untraceable:
                    continue
                if kinds == {"causal"}:
                    return kinds, ev + f" & … ({where})"
                if not kinds:  # a side that only raises (a bundle's switched-off stub): the & never gives a mask
                    return kinds, ev
            raise rf.Untraceable(f"neither side of `{ast.unparse(expr)[:60]}` is a causal mask ({where})")
        if isinstance(expr, ast.Subscript):
            parts = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
            if all((isinstance(x, ast.Constant) and x.value in (None, ...)) or
                   (isinstance(x, ast.Slice) and x.lower is x.upper is x.step is None) for x in parts):
                return self._mask(expr.value, func, file, depth + 1)
            raise rf.Untraceable(f"`{ast.unparse(expr)[:60]}` selects part of a mask ({where})")
        if isinstance(expr, ast.IfExp):
            return self._masks([rf.Origin(expr.body, func, file), rf.Origin(expr.orelse, func, file)], depth)
        if isinstance(expr, ast.Name):
            return self._masks(self.origins.name(func, expr.id, file), depth)
        if isinstance(expr, ast.Attribute):
            return self._masks(self.origins.attribute(expr.attr), depth)
        raise rf.Untraceable(f"a mask made by `{ast.unparse(expr)[:60]}` ({where})")

    def _masks(self, origins: list[rf.Origin], depth: int) -> tuple[set[str], str]:
        kinds: set[str] = set()
        evidence: list[str] = []
        for o in origins:
            k, ev = self._mask(o.expr, o.func, o.file, depth + 1)
            kinds |= k
            if ev:
                evidence.append(ev)
        return kinds, "; ".join(dict.fromkeys(evidence))

    def _guarded(self, file: str, call: ast.Call, name: str) -> bool:
        """The call runs only where ``name`` is not None (``if name is not None:``, ``if name:``, or the else of
        ``if name is None:``)."""
        pm = self._parents(file)
        child, cur = call, pm.get(id(call))
        while cur is not None and not isinstance(cur, ast.FunctionDef | ast.AsyncFunctionDef):
            if isinstance(cur, ast.If | ast.IfExp):
                t = cur.test
                body = cur.body if isinstance(cur.body, list) else [cur.body]
                orelse = cur.orelse if isinstance(cur.orelse, list) else [cur.orelse]
                is_name = isinstance(t, ast.Name) and t.id == name
                cmp = isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == name and \
                    len(t.ops) == 1 and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value is None
                if any(child is b for b in body) and (is_name or (cmp and isinstance(t.ops[0], ast.IsNot))):
                    return True
                if any(child is b for b in orelse) and cmp and isinstance(t.ops[0], ast.Is):
                    return True
            child, cur = cur, pm.get(id(cur))
        return False

    def causal(self) -> None:
        seen = 0
        masked: list[str] = []
        unreachable: list[str] = []
        windowed: list[str] = []
        for file, tree in self.trees.items():
            env = _const_env(tree)
            for c in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                last = _call_name(c).rsplit(".", 1)[-1]
                kw = {k.arg: k.value for k in c.keywords if k.arg}
                if not (last in ("scaled_dot_product_attention", "flex_attention", "varlen_attn")
                        or last.startswith("flash_attn") or "window_size" in kw):
                    continue
                seen += 1
                flag = kw.get("is_causal", kw.get("causal"))
                val = _literal(flag, env) if flag is not None else (False if "attn_mask" not in kw else ...)
                win = _literal_tuple(kw.get("window_size"), env)
                if val is True:
                    continue
                if flag is None and win is not None and len(win) == 2 and win[1] == 0:
                    windowed.append(f"{file}:{c.lineno}")  # FlashAttention's window (left, 0): nothing later
                    continue
                if flag is None and "attn_mask" in kw and last == "scaled_dot_product_attention":
                    m = kw["attn_mask"]
                    try:
                        kinds, ev = self._mask(m, self._func_at(file, c.lineno), file)
                        guarded = isinstance(m, ast.Name) and self._guarded(file, c, m.id)
                        if "causal" not in kinds and guarded:  # the mask is None in every run: the call never runs
                            unreachable.append(f"{file}:{c.lineno}" + (f" ({ev})" if ev else ""))
                            continue
                        if "causal" not in kinds or ("none" in kinds and not guarded):
                            raise rf.Untraceable(f"the mask may be None here ({file}:{c.lineno}), and without "
                                                 "is_causal that attends to later tokens")
                        masked.append(f"{file}:{c.lineno} attn_mask from {ev}"
                                      + (" (None excluded by its guard)" if "none" in kinds else ""))
                        continue
                    except rf.Untraceable as e:
                        self.add("legal_causal", "needs-proof", file, c.lineno,
                                 f"{last}(…) with attn_mask `{ast.unparse(m)[:40]}`: {e}; prove it is causal")
                        continue
                if val is False and "attn_mask" not in kw and "block_mask" not in kw:
                    self.add("legal_causal", "fail", file, c.lineno, f"{last}(…) without a causal flag or mask: "
                             "every position attends to later tokens")
                else:
                    self.add("legal_causal", "needs-proof", file, c.lineno,
                             f"{last}(…) with a mask or flag this review cannot evaluate "
                             f"({ast.unparse(flag) if flag is not None else 'attn_mask'}): prove it is causal")
        if seen and not [f for f in self.findings if f.check == "legal_causal"]:
            how = "causal=True or is_causal=True" + (f"; {len(masked)} with a mask traced to a lower-triangular one: "
                                                     + "; ".join(masked) if masked else "") \
                + (f"; {len(unreachable)} with a mask that is None in every run, behind its `is not None` guard, so "
                   "they never run: " + "; ".join(unreachable) if unreachable else "") \
                + (f"; {len(windowed)} with window_size (left, 0), FlashAttention's causal window: " + ", ".join(windowed)
                   if windowed else "")
            self.add("legal_causal", "pass", "", None, f"all {seen} attention calls are causal ({how}); other leaks "
                     "of later tokens are not ruled out statically")
        elif not seen:
            self.add("legal_causal", "needs-proof", "", None, "no attention call found (scaled_dot_product_attention, "
                     "flash_attn_*, flex_attention, varlen_attn, a window_size=): causality of the model cannot be read "
                     "statically")

    # -- n-gram caches and mixtures ---------------------------------------------------------------------
    def ngram(self) -> None:
        hashed = 0
        for file, tree in self.trees.items():
            for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
                hexprs = [n for n in ast.walk(fn) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitXor)
                          and self._has_prime(n)]
                if not hexprs:
                    continue
                hashed += 1
                keys = {k for n in ast.walk(fn) if isinstance(n, ast.Assign) and any(h in list(ast.walk(n.value))
                                                                                      for h in hexprs)
                        for t in n.targets for k in rf._target_keys(t)}
                if self._target_in_key(fn, hexprs):
                    self.add("legal_causal", "fail", file, hexprs[0].lineno,
                             f"{fn.name}: the hashed n-gram key includes the token being predicted "
                             "(target in the key; ruled out on PR #779, the #770/#786/#797 family)")
                ratio = self._count_ratio(fn)
                if ratio is not None and not self._normalizes(fn):
                    self.add("legal_normalized", "fail", file, ratio,
                             f"{fn.name}: the n-gram probability is a ratio of hashed count tables for the target only, "
                             "not normalized over the vocabulary (PRs #886, #1147: it sums to far more than 1)")
                else:
                    self.add("legal_normalized", "needs-proof", file, hexprs[0].lineno,
                             f"{fn.name}: hashed n-gram tables ({', '.join(sorted(keys)[:3]) or 'hash keys'}) feed the "
                             "score; prove the resulting distribution is normalized over the vocabulary "
                             "(the accepted form is the closed-form tilt of PR #1420/#1514)")
        for file, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and self._is_mixture(node) and \
                        self._in_scorer(file, node.lineno) and \
                        re.search(r"exp|prob|\bp_|_p\b|lp\b|\bp(?:lm|ng)\b|ngram|ppm|cache|mix", ast.unparse(node), re.I):
                    self.add("legal_normalized", "needs-proof", file, node.lineno,
                             f"a mixture `{ast.unparse(node)[:70]}` in the scoring path: prove the mixed distribution "
                             "sums to 1 over the vocabulary and its weight does not depend on the target "
                             "(byte-level PPM mixtures #1835…#2098 were excluded)")
        text = "\n".join(self.sources.values())
        if re.search(r"ngram|n_gram|ctxmixer|ppm", text, re.I) and re.search(r"ctypes|cpp_extension|load_library", text):
            self.add("legal_normalized", "needs-proof", "", None, "an n-gram/PPM predictor runs in native code that "
                     "this review cannot read: prove it is causal and normalized")
        if not [f for f in self.findings if f.check == "legal_normalized"]:
            src = self._score_source()
            if src:
                self.add("legal_normalized", "pass", src[0], src[1], f"scores come from {src[2]} over the vocabulary; "
                         "no hashed n-gram table or probability mixture in the scoring path")
            else:
                self.add("legal_normalized", "needs-proof", "", None, "could not find where the scored loss is computed "
                         "(no cross_entropy/log_softmax in the scoring functions)")

    def _has_prime(self, node: ast.AST) -> bool:
        for n in ast.walk(node):
            if isinstance(n, ast.Constant) and isinstance(n.value, int) and n.value > 10**6:
                return True
            if isinstance(n, ast.Name | ast.Attribute) and "prime" in (rf._dotted(n) or "").lower():
                return True
        return False

    def _target_in_key(self, fn: ast.AST, hexprs: list[ast.BinOp]) -> bool:
        for h in hexprs:
            for n in ast.walk(h):
                if isinstance(n, ast.Name) and TARGET_NAME.match(n.id):
                    return True
                if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name):
                    idx = n.slice.id  # tokens[pos] next to tokens[pos - k] in the same function
                    for m in ast.walk(fn):
                        if isinstance(m, ast.Subscript) and isinstance(m.slice, ast.BinOp) and \
                                isinstance(m.slice.op, ast.Sub) and isinstance(m.slice.left, ast.Name) and \
                                m.slice.left.id == idx:
                            return True
        return False

    def _count_ratio(self, fn: ast.AST) -> int | None:
        for n in ast.walk(fn):
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
                sides = [n.left, n.right]
                if all(any(isinstance(m, ast.Subscript) for m in ast.walk(s)) for s in sides):
                    return n.lineno
        return None

    def _normalizes(self, fn: ast.AST) -> bool:
        src = ast.unparse(fn)
        return bool(re.search(r"log_softmax|logsumexp|softmax\(|\.sum\((dim|axis)\s*=\s*-1|/\s*\w+\.sum\(", src))

    def _is_mixture(self, node: ast.BinOp) -> bool:
        """``a*p + (1-a)*q`` (or with exp()): a linear mixture of two predictors."""
        def factors(t: ast.AST) -> list[ast.AST]:
            return [t.left, t.right] if isinstance(t, ast.BinOp) and isinstance(t.op, ast.Mult) else []
        lf, rt = factors(node.left), factors(node.right)
        if not lf or not rt:
            return False
        one_minus = [f for f in lf + rt if isinstance(f, ast.BinOp) and isinstance(f.op, ast.Sub)
                     and isinstance(f.left, ast.Constant) and f.left.value in (1, 1.0)]
        return bool(one_minus)

    def _scores(self) -> list[tuple[rf.Func, rf.Event]]:
        """The validation-fed score events of the program (where scored values are summed or stored)."""
        return [(f, e) for f in self.prog.funcs for e in f.events if e.kind == "score" and e.val_fed]

    def _score_source(self) -> tuple[str, int, str] | None:
        scores = self._scores()
        if scores and all(e.loss for _, e in scores):  # every score traced to a normalized loss
            f, e = scores[0]
            kinds = sorted({k for _, x in scores for k in re.findall(r"\b(" + "|".join(rf.LOSS_FUNCS) + r") in ", x.loss)})
            more = f" (all {len(scores)} score sites — {', '.join(sorted({g.name for g, _ in scores}))} — store values " \
                f"of {'/'.join(kinds)})" if len(scores) > 1 else ""
            return f.file, e.line, f"`{e.text[:60]}` in {f.name}, whose value is {e.loss}{more}"
        for f in self.prog.funcs:
            if not self.prog.has_score(f):
                continue
            for n in ast.walk(f.node):
                if isinstance(n, ast.Call):
                    last = _call_name(n).rsplit(".", 1)[-1]
                    if last in ("cross_entropy", "log_softmax", "nll_loss", "logsumexp"):
                        return f.file, n.lineno, f"{last} in {f.name}"
        for f in self.prog.funcs:  # the model's own loss: model(x, y) scored inside a scorer
            if self.prog.has_score(f) and any(isinstance(n, ast.Call) and len(n.args) >= 2 and
                                              isinstance(n.func, ast.Name | ast.Attribute) and
                                              re.search(r"model", rf._dotted(n.func) or "") for n in ast.walk(f.node)):
                for g in self.prog.funcs:
                    for n in ast.walk(g.node):
                        if isinstance(n, ast.Call) and _call_name(n).rsplit(".", 1)[-1] == "cross_entropy":
                            return g.file, n.lineno, f"the model's cross_entropy ({g.name}) used by {f.name}"
        return None

    # -- subsets of validation ----------------------------------------------------------------------
    def subset(self, header: dict[str, str]) -> None:
        found = 0
        for file, tree in self.trees.items():
            for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
                loops = {id(m) for n in ast.walk(fn) if isinstance(n, ast.For | ast.While)
                         for m in ast.walk(n) if m is not n}
                floor_names = {k for n in ast.walk(fn) if isinstance(n, ast.Assign) and
                               any(isinstance(m, ast.BinOp) and isinstance(m.op, ast.FloorDiv) for m in ast.walk(n.value))
                               for t in n.targets for k in rf._target_keys(t)}
                for n in ast.walk(fn):
                    if not (isinstance(n, ast.Assign) and id(n) not in loops and isinstance(n.value, ast.Subscript)):
                        continue
                    tgt = [rf._ident(k) for t in n.targets for k in rf._target_keys(t)]
                    base = rf._ident(rf._dotted(n.value.value) or "")
                    if not (any(rf.VAL_NAME.match(t) for t in tgt) and rf.VAL_NAME.match(base)):
                        continue
                    sl = n.value.slice
                    if not isinstance(sl, ast.Slice):
                        continue
                    for bound in (sl.lower, sl.upper):
                        v = self._subset_bound(bound, floor_names)
                        if v is None:
                            continue
                        found += 1
                        knob = v if isinstance(v, str) else None
                        if knob is not None:
                            logged = header.get(knob.lower())
                            neutral = logged is not None and logged.strip() in ("", "0", "-1", "None", "1.0", "1", "0.0")
                            verdict = "pass" if neutral else ("fail" if logged is not None else "needs-proof")
                            note = f"the log sets {knob.lower()}={logged!r}" if logged is not None else \
                                "its value is not in the logs"
                            self.add("subset_scoring", verdict, file, n.lineno,
                                     f"validation cut by `{ast.unparse(n)[:70]}` ({note})")
                        else:
                            self.add("subset_scoring", "fail", file, n.lineno,
                                     f"validation cut to a constant subset: `{ast.unparse(n)[:70]}`")
        for knob in ("val_doc_fraction", "val_fraction", "val_max_tokens", "max_val_tokens", "val_tokens_limit",
                     "val_docs", "eval_docs", "ttt_eval_docs"):
            if knob in header:
                v = header[knob].strip()
                neutral = v in ("", "0", "-1", "None", "1.0", "1", "50000")
                found += 1
                self.add("subset_scoring", "pass" if neutral else "fail", "log", None,
                         f"the log sets {knob}={v!r}" + ("" if neutral else ": a subset of validation is scored"))
        if not found:
            self.add("subset_scoring", "pass", "", None, "no slice of the validation tokens by a constant, limit or "
                     "fraction outside the evaluation loops (trimming to a multiple of the sequence length is allowed)")

    def _subset_bound(self, bound: ast.AST | None, floor_names: set[str]):
        """None when the bound is harmless (absent, ±1, a trim to a multiple); else the knob name or True."""
        if bound is None:
            return None
        if isinstance(bound, ast.Constant) and isinstance(bound.value, int):
            return None if abs(bound.value) <= 1 else True
        if isinstance(bound, ast.UnaryOp) and isinstance(bound.operand, ast.Constant):
            return None if abs(bound.operand.value) <= 1 else True
        if any(isinstance(m, ast.BinOp) and isinstance(m.op, ast.FloorDiv) for m in ast.walk(bound)):
            return None
        names = [rf._ident(rf._dotted(m) or "") for m in ast.walk(bound) if isinstance(m, ast.Name | ast.Attribute)]
        if any(nm in floor_names for nm in names):
            return None
        for nm in names:
            if SUBSET_KNOB.search(nm) and not re.search(r"seq_len|stride|numel|len", nm):
                return nm
        return None

    # -- the flow-based checks ---------------------------------------------------------------------
    def flow(self) -> None:
        shapes = rf.update_shapes(self.prog)
        seen: set[tuple[str, int, str]] = set()  # one finding per (function, loop or line, shape): backward+step
        for s in shapes:
            u = s.update
            key = (s.func.name, u.loop_lines[-1] if u.loop_lines else u.line, s.shape)
            if key in seen:
                continue
            seen.add(key)
            via = f" via {u.callee}()" if u.callee else ""
            where = f"{s.func.name}, line {u.line}{via}"
            after = s.score_after.line if s.score_after else "?"
            before = s.score_before.line if s.score_before else "?"
            kw = {"node": u.node, "func": s.func, "callee": u.callee}
            if s.shape == "C" and s.scoring_callee:
                self.add("legal_single_pass", "needs-proof", s.func.file, u.line,
                         f"{where}: this evaluation adapts on validation while scoring it, and validation is scored "
                         f"again at line {after}: prove the adaptation does not carry into that scoring", **kw)
            elif s.shape == "C":
                self.add("legal_score_first", "fail", s.func.file, u.line,
                         f"{where}: updates the model on validation tokens, and validation is scored later at line "
                         f"{after} outside any loop shared with the update (adapting before scoring; PRs "
                         "#1376/#1487/#1488 were closed for this)", **kw)
                if s.rescored:
                    self.add("legal_single_pass", "fail", s.func.file, u.line,
                             f"{s.func.name}: validation scored at line {before}, updated on at line {u.line}, "
                             f"scored again at line {after}", **kw)
            elif s.shape == "W":
                self.add("outside_timers", "needs-proof", s.func.file, u.line,
                         f"{where}: a warm-up runs backward/step on validation tokens before they are scored; legal "
                         "only if every adapted weight and optimizer state is discarded (the PR #1530 concern)", **kw)
            elif s.shape == "B":
                self.add("legal_score_first", "needs-proof", s.func.file, u.line,
                         f"{where} (`{u.text[:70]}`): in the loop at line {s.shared_loop_line} the update comes before "
                         f"the scoring at line {after}: legal only if it trains on tokens scored in earlier iterations",
                         **kw)
        a_sites = [s for s in shapes if s.shape == "A" and s.score_before is not None  # not a call that does both
                   and s.score_before.node is not s.update.node]
        verified = "; ".join(dict.fromkeys(
            f"{s.func.name} line {s.update.line}" + (f" via {s.update.callee}()" if s.update.callee else "")
            + f" updates after the score at line {s.score_before.line if s.score_before else '?'} in the same "
            f"iteration of the loop at line {s.shared_loop_line}" for s in a_sites))
        if a_sites and [f for f in self.findings if f.check == "legal_score_first" and f.verdict != "pass"]:
            self.add("legal_score_first", "pass", a_sites[0].func.file, a_sites[0].update.line,
                     "score-first, as far as verified: " + verified)
        if not [f for f in self.findings if f.check == "legal_score_first" and f.verdict != "pass"]:
            updates = [e for f in self.prog.funcs for e in f.events if e.kind == "update"]
            if a_sites:
                s = a_sites[0]
                self.add("legal_score_first", "pass", s.func.file, s.update.line,
                         f"{len(a_sites)} validation-fed update site(s), each after a score in the same loop iteration: "
                         + verified)
            elif not shapes and updates and not self._scores():
                self.add("legal_score_first", "needs-proof", "", None, "no update is fed validation data, but validation "
                         "could not be followed to where it is scored either: the data flow of this script was not "
                         "followed")
            elif not shapes and updates:
                sc = self._scores()[0]
                self.add("legal_score_first", "pass", "", None, f"no optimizer step or backward pass is fed validation "
                         f"data ({len(updates)} update sites, all on other data; validation followed to its scoring, e.g. "
                         f"{sc[0].name} line {sc[1].line} in {sc[0].file}): no test-time training")
            elif not updates:
                self.add("legal_score_first", "needs-proof", "", None, "no update site found at all: the data flow of "
                         "this script could not be followed")
            elif not [f for f in self.findings if f.check == "legal_score_first"]:
                self.add("legal_score_first", "pass", "", None, "validation-fed updates come only after all scoring")
        for f, e, loop_line in rf.score_loops_over_epochs(self.prog):
            self.add("legal_single_pass", "fail", f.file, e.line,
                     f"{f.name}: validation is scored inside the epoch loop at line {loop_line} (multiple passes)",
                     node=e.node, func=f)
        for f, line, text in rf.selection_over_scorings(self.prog):
            self.add("legal_single_pass", "fail", f.file, line,
                     f"{f.name}: the best of several validation scorings is picked (`{text}`)", func=f)
        if not [f for f in self.findings if f.check == "legal_single_pass" and f.verdict != "pass"]:
            self.add("legal_single_pass", "pass", "", None, "no validation scoring repeated after an update, inside an "
                     "epoch loop, or chosen by min/compare among several scorings")
        for f, e in rf.calibration_on_val(self.prog):
            self.add("val_in_training", "fail", f.file, e.line,
                     f"{f.name}: {e.callee}(…) is fed validation data (calibration/Hessians on validation)",
                     node=e.node, func=f)
        for f, u in rf.training_with_val(self.prog):
            if not u.callee or not any(self.prog.has_score(g) for g in self.prog.by_name.get(u.callee, [])):
                self.add("val_in_training", "fail", f.file, u.line,
                         f"{f.name}: an update fed validation data inside a loop that draws training batches",
                         node=u.node, func=f)
        if not [f for f in self.findings if f.check == "val_in_training" and f.verdict != "pass"]:
            self.add("val_in_training", "pass", "", None, "no calibration/Hessian call and no training-loop update is "
                     "fed validation data (static data flow)")

    def run(self, header: dict[str, str] | None = None, readme: str = "") -> list[Finding]:
        self.settings = effective_settings(self.trees, readme, header or {})
        for name, why in self.unparsed.items():
            for check in ("legal_causal", "legal_normalized", "legal_score_first", "legal_single_pass"):
                self.add(check, "needs-proof", name, None, why)
        if not self.trees:
            return self.findings
        self.network_and_binaries()
        self.causal()
        self.ngram()
        self.subset({k: v for k, (v, src) in self.settings.items() if src == "log"})
        self.flow()
        return self.findings
