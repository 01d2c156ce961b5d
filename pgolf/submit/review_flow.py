"""Where validation tokens flow in a submission's script, and whether updates come after scoring.

A static data-flow pass over the (decoded) script's ``ast``, never executing it:

- **Taint.** Validation data enters through names and attributes such as ``val_tokens``, ``val_data``,
  ``args.val_files`` or a string naming ``fineweb_val``; it flows through assignments (a plain assignment
  from untainted data removes it), loop targets, call results, and into the parameters of functions of the
  script that are called with it (interprocedural, to a fixed point).
- **Events.** An *update* is ``x.backward()`` or an optimizer's ``.step()``; it is *fed by validation* when
  the loss (or, for ``step``, the backward pass beside it) depends on validation data. A *score* is an
  accumulation ``loss_sum += …`` / ``nll_sum.add_(…)`` of a validation-derived quantity. Calls to functions
  of the script stand for their events.
- **Order** (README FAQ "only … tokens you've already evaluated"; issue #1017 condition 3; #677): for each
  validation-fed update, the scores around it decide
  ``A`` scored earlier in the same loop iteration (the score-first shape of [03-23] PR #549 and [04-10]+),
  ``B`` a loop whose update comes before its scoring (legal only if it trains on earlier iterations' tokens),
  ``C`` validation scored later, outside any loop shared with the update (adapting before scoring: the
  pre-quant TTT of PRs #1376/#1487/#1488, closed as invalid), ``W`` the same inside a warm-up (compile
  warm-up on validation tokens, the PR #1530 concern), ``D`` no scoring after it.

It is an approximation: dynamic dispatch, ``getattr`` and data passed through containers of other objects are
not followed. The review turns its shapes into verdicts and says "needs-proof" where it cannot decide.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

VAL_NAME = re.compile(r"^(?:val|valid|validation)_?(?:tokens?|toks|ids|data|docs?|seqs?|stream|set|shards?|files?|"
                      r"bytes|np|arr|tensor|pattern|paths?|tokens_\w+|loader)$")
SCORE_ACC = re.compile(r"(?:loss|nll|bits|logprob|log_prob|xent|ce)_?(?:sum|total|acc|accum)$|"
                       r"^(?:sum|total|tot|acc)_?(?:loss|nll|bits|logprob)|^_?(?:loss|nll)s?_?sum")
NOT_OPTIMIZER = re.compile(r"sched|scaler|ema|swa|pbar|bar\b|progress|lr_|timer|prof", re.I)
TRAIN_DATA = re.compile(r"^(?:train_loader|train_files|train_tokens|train_stream|train_data|train_iter)$")
CALIB = re.compile(r"hessian|calib|gptq", re.I)
EPOCHS = re.compile(r"epoch|_ep\b|^ep$|passes|n_pass", re.I)
MUTATORS = {"append", "extend", "insert", "add", "update", "copy_", "put", "setdefault", "appendleft"}
SKIP_RESOLVE = {"step", "backward", "forward", "__init__", "__call__", "zero_grad", "item", "to", "cuda", "cpu"}
LOSS_FUNCS = {"cross_entropy", "nll_loss", "log_softmax", "logsumexp"}
"""Calls whose value is a (log-)probability or loss of a normalized distribution: the values a scorer sums."""
STORES = {"put", "index_put_", "index_add_", "append", "extend", "add_", "copy_", "scatter_", "index_copy_"}
"""Methods that store or accumulate a value into a container (``sink.put(index, ce)``, ``losses.append(nll)``)."""
STORED = "stored: "
"""Prefix of a loss read back from a container it was stored in (``_pn[i] = nll`` … ``_pn.numpy()``)."""
SIZES = {"numel", "size", "dim", "nelement"}
"""Methods that give a size, not data: ``val_tokens.numel()`` counts validation tokens, it holds none of them."""
NUMERIC = {"int", "float", "bool"}
MODEL_CALL = re.compile(r"(?:^|\.)(?:model|scorer|base_model|net|gpt)$", re.I)


@dataclass
class Event:
    kind: str  # "update" | "score" | "call"
    line: int
    order: int
    loops: tuple[int, ...]
    val_fed: bool = False
    callee: str | None = None
    loss: str = ""
    """For a score: where the stored value comes from (``cross_entropy in forward, gpt.py:448``)."""
    args_tainted: bool = False
    text: str = ""
    loop_lines: tuple[int, ...] = ()
    names: frozenset[str] = frozenset()
    """Names the event reads (a backward's loss, a score's value)."""
    branch: tuple[tuple[int, int], ...] = ()
    """(if-statement, 0 body / 1 else) on the way to the event: events in different arms never both run."""
    node: ast.AST | None = None

    def exclusive(self, other: Event) -> bool:
        mine = dict(self.branch)
        return any(k in mine and mine[k] != v for k, v in other.branch)


@dataclass
class Func:
    name: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    file: str
    params: list[str]
    tainted_params: set[str] = field(default_factory=set)
    closure: set[str] = field(default_factory=set)
    events: list[Event] = field(default_factory=list)
    returns_taint: bool = False
    returns_loss: str = ""
    """Where the loss this function returns comes from, if it returns one."""
    mentions_val: bool = False
    loop_src: dict[int, str] = field(default_factory=dict)
    method: bool = False
    """Defined in a class body: reached by ``obj.name(…)``, never by a bare ``name(…)``."""
    local_names: frozenset[str] | None = None
    """Its parameters and the names it assigns (computed once)."""


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _target_keys(t: ast.AST) -> list[str]:
    if isinstance(t, ast.Tuple | ast.List):
        return [k for e in t.elts for k in _target_keys(e)]
    if isinstance(t, ast.Starred):
        return _target_keys(t.value)
    if isinstance(t, ast.Subscript):
        return _target_keys(t.value)
    d = _dotted(t)
    return [d] if d else []


def _names(node: ast.AST) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(node) if isinstance(n, ast.Name))


def _ident(key: str) -> str:
    return key.rsplit(".", 1)[-1]


class Program:
    """All functions of the sources, by name, and the fixed point of validation taint over them."""

    def __init__(self, trees: dict[str, ast.Module], sources: dict[str, str]):
        self.sources = sources
        self.funcs: list[Func] = []
        self.by_name: dict[str, list[Func]] = {}
        self.parent: dict[int, Func] = {}
        self.imported: dict[str, set[str]] = {}
        """Per file, the names its imports bind (``dist`` of ``from pgolf import dist``): ``dist.rank()`` may be a
        module's function, ``model.train()`` only a method."""
        for file, tree in trees.items():
            self._collect(tree, file, None)
            self.imported[file] = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                                   if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        self.module_bodies = trees
        self.numeric_fields = {s.target.id for tree in trees.values() for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                               for s in c.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                               and isinstance(s.annotation, ast.Name) and s.annotation.id in NUMERIC}
        """Fields declared ``int``/``float``/``bool`` in a class body (a config's ``val_tokens_during_training: int``):
        numbers, not validation data, whatever their name says."""

    def _collect(self, node: ast.AST, file: str, parent: Func | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                params = [a.arg for a in child.args.posonlyargs + child.args.args + child.args.kwonlyargs]
                f = Func(child.name, child, file, params, method=isinstance(node, ast.ClassDef))
                self.funcs.append(f)
                self.by_name.setdefault(child.name, []).append(f)
                if parent is not None:
                    self.parent[id(f)] = parent
                self._collect(child, file, f)
            else:
                self._collect(child, file, parent)

    def resolve(self, call: ast.Call, file: str | None = None) -> list[Func]:
        """The functions of the program a call may run, by name: ``f(…)`` a function (not a method),
        ``obj.f(…)`` a method, or also a module's function when ``obj`` is a name ``file`` imports."""
        f = call.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if not name or name in SKIP_RESOLVE:
            return []
        funcs = self.by_name.get(name, [])
        if file is None:
            return funcs
        if isinstance(f, ast.Name):
            return [g for g in funcs if not g.method]
        module = isinstance(f.value, ast.Name) and f.value.id in self.imported.get(file, set())
        return funcs if module else [g for g in funcs if g.method]

    def run(self, rounds: int = 8) -> None:
        """Taint to a fixed point: each round re-reads only the functions whose inputs changed (new tainted
        parameters, a callee's or the enclosing function's summary)."""
        for f in self.funcs:
            f.tainted_params = {p for p in f.params if VAL_NAME.match(p)}
        children: dict[int, list[Func]] = {}
        for f in self.funcs:
            if id(f) in self.parent:
                children.setdefault(id(self.parent[id(f)]), []).append(f)
        dirty = {id(f) for f in self.funcs}
        for _ in range(rounds):
            nxt: set[int] = set()
            changed: set[str] = set()
            for f in self.funcs:
                if id(f) not in dirty:
                    continue
                parent = self.parent.get(id(f))
                before = (f.returns_taint, f.returns_loss, f.mentions_val, len(f.closure))
                state = _Pass(self, f, set(f.tainted_params) | (parent.closure if parent else set()))
                state.run()
                for callee, bound in state.bindings:
                    new = bound - callee.tainted_params
                    if new:
                        callee.tainted_params |= new
                        nxt.add(id(callee))
                if before != (f.returns_taint, f.returns_loss, f.mentions_val, len(f.closure)):
                    changed.add(f.name)
                    nxt |= {id(c) for c in children.get(id(f), [])}
            if changed:
                nxt |= {id(g) for g in self.funcs if any(e.callee in changed for e in g.events if e.kind == "call")}
            if not nxt:
                break
            dirty = nxt

    # -- summaries ------------------------------------------------------------------------------
    def has_val_update(self, f: Func, seen: frozenset[int] = frozenset()) -> bool:
        if id(f) in seen:
            return False
        seen = seen | {id(f)}
        for e in f.events:
            if e.kind == "update" and e.val_fed:
                return True
            if e.kind == "call" and (e.args_tainted or any(g.mentions_val for g in self.by_name.get(e.callee or "", []))):
                if any(self.has_val_update(g, seen) for g in self.by_name.get(e.callee or "", [])):
                    return True
        return False

    def has_score(self, f: Func, seen: frozenset[int] = frozenset()) -> bool:
        if id(f) in seen:
            return False
        seen = seen | {id(f)}
        for e in f.events:
            if e.kind == "score" and e.val_fed:
                return True
            if e.kind == "call" and any(self.has_score(g, seen) for g in self.by_name.get(e.callee or "", [])):
                return True
        return False


class _Pass:
    """One forward pass over a function body with the set of tainted keys (names, dotted attributes)."""

    def __init__(self, prog: Program, func: Func, tainted: set[str]):
        self.prog = prog
        self.f = func
        self.state = tainted
        self.events: dict[tuple[int, str], Event] = {}
        self.bindings: list[tuple[Func, set[str]]] = []
        self.order = 0
        self.everything: set[str] = set(tainted)
        self.returns = False
        self.returns_loss = ""
        self.lossy: dict[str, str] = {}
        self.mentions = False
        self.branch: list[tuple[int, int]] = []
        if func.local_names is None:
            func.local_names = frozenset(func.params) | {n.id for n in ast.walk(func.node) if isinstance(n, ast.Name)
                                                          and isinstance(n.ctx, ast.Store)}
        self.local_names = func.local_names

    def run(self) -> None:
        self.block(self.f.node.body, ())
        evs = sorted(self.events.values(), key=lambda e: e.order)
        backs = [e for e in evs if e.kind == "update" and e.text == "backward"]
        for e in evs:  # ``epoch_loss_sum += loss.item()`` after ``loss.backward()`` logs the training loss
            if e.kind == "score" and any(b.loops and b.loops[-1:] == e.loops[-1:] and b.order < e.order
                                         and b.names & e.names for b in backs):
                e.kind = "trainlog"
        for e in evs:  # an optimizer step is validation-fed when a backward beside it is
            if e.kind == "update" and e.text == "step":
                inner = e.loops[-1:] if e.loops else ()
                e.val_fed = any(b.val_fed and (b.loops[-1:] == inner or set(inner) <= set(b.loops)) for b in backs) \
                    if backs else e.val_fed
        self.f.events = evs
        self.f.closure = self.everything
        self.f.returns_taint = self.returns
        self.f.returns_loss = self.returns_loss
        self.f.mentions_val = self.mentions

    # -- taint of expressions --------------------------------------------------------------------
    def tainted(self, node: ast.AST | None) -> bool:
        """Does ``node`` read validation data? A call of a function of the script is tainted when that
        function returns validation-derived data; any other call when its receiver or an argument is."""
        if node is None or isinstance(node, ast.Lambda):
            return False
        if isinstance(node, ast.Name):
            if VAL_NAME.match(node.id):
                self.mentions = True
                return True
            return node.id in self.state
        if isinstance(node, ast.Attribute):
            if node.attr in ("shape", "ndim"):
                return False
            if (VAL_NAME.match(node.attr) and node.attr not in self.prog.numeric_fields) or node.attr == "val":  # data.val: the validation split of a data object
                self.mentions = True
                return True
            d = _dotted(node)
            return bool(d and d in self.state) or self.tainted(node.value)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and "fineweb_val" in node.value:
                self.mentions = True
                return True
            return False
        if isinstance(node, ast.Call):
            if (isinstance(node.func, ast.Name) and node.func.id == "len") or \
                    (isinstance(node.func, ast.Attribute) and node.func.attr in SIZES):
                return False
            own = self.prog.resolve(node, self.f.file)
            if own:
                args_t = any(self.tainted(a) for a in node.args) or any(self.tainted(k.value) for k in node.keywords)
                return any(g.returns_taint and (args_t or g.mentions_val) for g in own)
        return any(self.tainted(c) for c in ast.iter_child_nodes(node))

    def loss_of(self, node: ast.AST | None, depth: int = 0) -> str:
        """Where the loss (or log-probability) ``node`` holds comes from, or "" when it holds none: a call of
        cross_entropy/nll_loss/log_softmax/logsumexp, the model called with targets (``model(x, y)``, whose
        forward returns such a loss), a function of the script returning one, or a name that holds one."""
        if node is None or depth > 40 or isinstance(node, ast.Lambda):
            return ""
        if isinstance(node, ast.Name):
            return self.lossy.get(node.id, "")
        if isinstance(node, ast.Call):
            last = (_dotted(node.func) or "").rsplit(".", 1)[-1] if not isinstance(node.func, ast.Attribute) \
                else node.func.attr
            if last in LOSS_FUNCS:
                return f"{last} in {self.f.name} ({self.f.file}:{node.lineno})"
            own = [g for g in self.prog.resolve(node, self.f.file) if g.returns_loss]
            if own:
                return f"{own[0].name}() → {own[0].returns_loss}"
            d = _dotted(node.func) or ""
            if MODEL_CALL.search(d) and (len(node.args) >= 2 or any(k.arg in ("targets", "target", "reduction", "y")
                                                                    for k in node.keywords)):
                fwd = [g for g in self.prog.by_name.get("forward", []) if g.returns_loss]
                inner = f" → forward() → {fwd[0].returns_loss}" if fwd else ""
                return f"the model's loss `{ast.unparse(node)[:50]}` ({self.f.file}:{node.lineno}){inner}"
        for c in ast.iter_child_nodes(node):
            if isinstance(c, ast.expr) and (src := self.loss_of(c, depth + 1)):
                return src
        return ""

    def assign(self, targets: list[ast.AST], value_tainted: bool, strong: bool, loss: str = "") -> None:
        for t in targets:
            for k in _target_keys(t):
                if loss:  # an element stored into a container: reading it back later is not scoring it again
                    self.lossy[k] = loss if not isinstance(t, ast.Subscript) or loss.startswith(STORED) else STORED + loss
                elif strong and isinstance(t, ast.Name | ast.Tuple | ast.List):
                    self.lossy.pop(k, None)
        for t in targets:
            for k in _target_keys(t):
                if value_tainted:
                    self.state.add(k)
                    self.everything.add(k)
                elif strong and isinstance(t, ast.Name | ast.Tuple | ast.List):
                    self.state.discard(k)

    # -- events ----------------------------------------------------------------------------------
    def add(self, node: ast.AST, kind: str, loops: tuple[int, ...], **kw) -> None:
        key = (id(node), kind + str(kw.get("callee", "")))
        self.order += 1
        ev = self.events.get(key)
        if ev is None:
            loop_lines = tuple(self.f.loop_src.get(lp, 0) for lp in loops)
            self.events[key] = Event(kind, getattr(node, "lineno", 0), self.order, loops, loop_lines=loop_lines,
                                     branch=tuple(self.branch), node=node, **kw)
        else:
            ev.val_fed |= kw.get("val_fed", False)
            ev.args_tainted |= kw.get("args_tainted", False)

    def calls(self, expr: ast.AST, loops: tuple[int, ...]) -> None:
        calls = [n for n in ast.walk(expr) if isinstance(n, ast.Call)]
        calls.sort(key=lambda c: (c.lineno, c.col_offset))
        for c in calls:
            f = c.func
            if isinstance(f, ast.Attribute) and f.attr == "backward":
                self.add(c, "update", loops, val_fed=self.tainted(f.value) or any(self.tainted(a) for a in c.args),
                         text="backward", names=_names(f.value))
                continue
            if isinstance(f, ast.Attribute) and f.attr in MUTATORS and any(self.tainted(a) for a in c.args):
                self.assign([f.value], True, strong=False)  # buf.append(val_tokens[i:j]) taints buf
            if isinstance(f, ast.Attribute) and f.attr == "step" and not NOT_OPTIMIZER.search(ast.unparse(f.value)) \
                    and len(c.args) <= 1:
                self.add(c, "update", loops, val_fed=False, text="step")
                continue
            if isinstance(f, ast.Attribute) and f.attr in ("add_", "append", "extend") and \
                    SCORE_ACC.search(_ident(_dotted(f.value) or "")) and self.tainted(c):
                self.add(c, "score", loops, val_fed=True, text=ast.unparse(c)[:80], loss=self.loss_of(c))
                continue
            if isinstance(f, ast.Attribute) and f.attr in STORES:  # sink.put(index, ce): a validation loss stored
                stored = [(a, src) for a in c.args if (src := self.loss_of(a)) and not src.startswith(STORED)
                          and self.tainted(a)]
                if stored:
                    self.add(c, "score", loops, val_fed=True, text=ast.unparse(c)[:80], loss=stored[0][1],
                             names=_names(stored[0][0]))
                    continue
            targets = list(self.prog.resolve(c, self.f.file))
            arg_nodes = list(c.args) + [k.value for k in c.keywords]
            any_tainted = any(self.tainted(a) for a in arg_nodes)
            for a in c.args:  # a function of the script passed as an argument (timed_eval(label, fn, ...))
                if isinstance(a, ast.Name) and a.id in self.prog.by_name and a.id not in SKIP_RESOLVE and \
                        a.id not in self.local_names:  # not a local variable of that name (`train = mask & …`)
                    for g in self.prog.by_name[a.id]:
                        if g.method:
                            continue
                        self.add(c, "call", loops, callee=g.name, args_tainted=any_tainted, text=ast.unparse(c)[:80])
                        if any_tainted:
                            self.bindings.append((g, set(g.params)))
            for g in targets:
                self.add(c, "call", loops, callee=g.name, args_tainted=any_tainted, text=ast.unparse(c)[:80])
                bound: set[str] = set()
                params = g.params[1:] if isinstance(f, ast.Attribute) and g.params[:1] == ["self"] else g.params
                for p, a in zip(params, c.args, strict=False):
                    if self.tainted(a):
                        bound.add(p)
                for k in c.keywords:
                    if k.arg in g.params and self.tainted(k.value):
                        bound.add(k.arg)
                if bound:
                    self.bindings.append((g, bound))

    # -- statements ------------------------------------------------------------------------------
    def block(self, body: list[ast.stmt], loops: tuple[int, ...]) -> None:
        for s in body:
            self.stmt(s, loops)

    def stmt(self, s: ast.stmt, loops: tuple[int, ...]) -> None:
        if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return
        if isinstance(s, ast.Assign):
            self.calls(s.value, loops)
            self.assign(s.targets, self.tainted(s.value), strong=True, loss=self.loss_of(s.value))
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                self.calls(s.value, loops)
                self.assign([s.target], self.tainted(s.value), strong=True, loss=self.loss_of(s.value))
        elif isinstance(s, ast.AugAssign):
            self.calls(s.value, loops)
            t, loss = self.tainted(s.value), self.loss_of(s.value)
            key = _ident((_target_keys(s.target) or [""])[0])
            if SCORE_ACC.search(key):
                self.add(s, "score", loops, val_fed=t, text=ast.unparse(s)[:80], names=_names(s.value), loss=loss)
            self.assign([s.target], t, strong=False, loss=loss)
        elif isinstance(s, ast.For | ast.AsyncFor):
            self.calls(s.iter, loops)
            self.f.loop_src[id(s)] = s.lineno
            inner = loops + (id(s),)
            for _ in range(2):
                self.assign([s.target], self.tainted(s.iter), strong=True)
                self.block(s.body, inner)
            self.block(s.orelse, loops)
        elif isinstance(s, ast.While):
            self.calls(s.test, loops)
            self.f.loop_src[id(s)] = s.lineno
            for _ in range(2):
                self.block(s.body, loops + (id(s),))
            self.block(s.orelse, loops)
        elif isinstance(s, ast.If):
            self.calls(s.test, loops)
            before = set(self.state)
            self.branch.append((id(s), 0))
            self.block(s.body, loops)
            self.branch[-1] = (id(s), 1)
            after_body = self.state
            self.state = before
            self.block(s.orelse, loops)
            self.branch.pop()
            self.state = self.state | after_body
        elif isinstance(s, ast.With | ast.AsyncWith):
            for it in s.items:
                self.calls(it.context_expr, loops)
                if it.optional_vars is not None:
                    self.assign([it.optional_vars], self.tainted(it.context_expr), strong=True)
            self.block(s.body, loops)
        elif isinstance(s, ast.Try):
            self.block(s.body, loops)
            for h in s.handlers:
                self.block(h.body, loops)
            self.block(s.orelse, loops)
            self.block(s.finalbody, loops)
        elif isinstance(s, ast.Return):
            if s.value is not None:
                self.calls(s.value, loops)
                self.returns |= self.tainted(s.value)
                loss = self.loss_of(s.value)
                if loss and loss not in self.returns_loss:
                    self.returns_loss = f"{self.returns_loss} or {loss}" if self.returns_loss else loss
        else:
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.calls(child, loops)


@dataclass
class UpdateShape:
    """One validation-fed update and how the scores around it are ordered (see the module docstring)."""

    shape: str  # A B C W D
    func: Func
    update: Event
    score_before: Event | None
    score_after: Event | None
    shared_loop_line: int | None
    warmup: bool
    rescored: bool  # scores both before and after it (outside a shared loop)
    scoring_callee: bool = False
    """The update is a call of a function that also scores (a TTT evaluation): whether what it adapted
    persists into a later scoring cannot be read statically."""


def _expanded(prog: Program, f: Func) -> list[tuple[Event, str]]:
    """f's events as (event, kind) with calls replaced by what the callee does: score, update or both."""
    out: list[tuple[Event, str]] = []
    for e in f.events:
        if e.kind != "call":
            if e.val_fed:
                out.append((e, e.kind))
            continue
        callees = prog.by_name.get(e.callee or "", [])
        upd = any(prog.has_val_update(g) for g in callees) and (e.args_tainted or any(g.mentions_val for g in callees))
        sc = any(prog.has_score(g) for g in callees)
        if sc:
            out.append((e, "score"))
        if upd:
            out.append((e, "update"))
    return out


def _warm_context(prog: Program, f: Func, e: Event) -> bool:
    if "warm" in f.name.lower():
        return True
    src = prog.sources.get(f.file, "").split("\n")
    head = e.loop_lines[0] if e.loop_lines else e.line  # the outermost loop's header, and the lines before it
    window = "\n".join(src[max(head - 7, 0): head])
    return bool(re.search(r"warm", window, re.I))


def update_shapes(prog: Program) -> list[UpdateShape]:
    """Every validation-fed update of the script with its shape, in source order per function."""
    shapes: list[UpdateShape] = []
    for f in prog.funcs:
        evs = _expanded(prog, f)
        scores = [(i, e) for i, (e, k) in enumerate(evs) if k == "score"]
        for i, (u, k) in enumerate(evs):
            if k != "update":
                continue
            before = [(j, s) for j, s in scores if j < i and not s.exclusive(u)]
            after = [(j, s) for j, s in scores if j > i and not s.exclusive(u)]
            shared = lambda s, u=u: set(s.loops) & set(u.loops)  # noqa: E731
            b_sh = [s for _, s in before if shared(s)]
            a_sh = [s for _, s in after if shared(s)]
            a_un = [s for _, s in after if not shared(s)]
            warm = _warm_context(prog, f, u)
            if a_un:
                shape = "W" if warm else "C"
            elif b_sh:
                shape = "A"
            elif a_sh:
                shape = "B"
            else:
                shape = "D"
            loop_line = None
            pick = b_sh or a_sh
            if pick:
                common = [lp for lp in u.loops if lp in pick[0].loops]
                loop_line = f.loop_src.get(common[-1]) if common else None
            scoring_callee = u.kind == "call" and any(prog.has_score(g) for g in prog.by_name.get(u.callee or "", []))
            shapes.append(UpdateShape(shape, f, u, (b_sh or [s for _, s in before] or [None])[-1],
                                      (a_un or a_sh or [None])[0], loop_line, warm,
                                      rescored=bool(a_un) and bool(before) and not warm, scoring_callee=scoring_callee))
    return shapes


def score_loops_over_epochs(prog: Program) -> list[tuple[Func, Event, int]]:
    """Scores inside a loop over epochs/passes (``for ep in range(epochs)``): multiple passes."""
    out = []
    for f in prog.funcs:
        loops = {}
        for node in ast.walk(f.node):
            if isinstance(node, ast.For):
                loops[id(node)] = node
        for e in f.events:
            if e.kind == "score" and e.val_fed:
                for lp in e.loops:
                    node = loops.get(lp)
                    if node is not None and EPOCHS.search(ast.unparse(node.target) + " " + ast.unparse(node.iter)):
                        out.append((f, e, node.lineno))
                        break
    return out


def selection_over_scorings(prog: Program) -> list[tuple[Func, int, str]]:
    """A scoring call on validation inside a loop whose results are compared or minimised: the best of
    several scorings of validation is picked (e.g. a temperature or a checkpoint chosen on validation)."""
    out = []
    scorers = {f.name for f in prog.funcs if prog.has_score(f)}
    for f in prog.funcs:
        for node in ast.walk(f.node):
            if not isinstance(node, ast.For | ast.While):
                continue
            inner = [n for st in node.body for n in ast.walk(st)]
            calls = [c for c in inner if isinstance(c, ast.Call) and any(g.name in scorers for g in prog.resolve(c, f.file))
                     and _val_args(c)]
            if not calls:
                continue
            results: set[str] = set()
            for n in inner:
                if isinstance(n, ast.Assign) and any(c in list(ast.walk(n.value)) for c in calls):
                    results |= {_ident(k) for t in n.targets for k in _target_keys(t)}
            uses = lambda n, r=results: any(isinstance(x, ast.Name) and x.id in r for x in ast.walk(n))  # noqa: E731
            picks = any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in ("min", "max", "sorted")
                        and uses(c) for c in inner)
            compares = any(isinstance(n, ast.Compare) and any(isinstance(o, ast.Lt | ast.Gt | ast.LtE | ast.GtE)
                                                              for o in n.ops) and uses(n) for n in inner)
            if results and (picks or compares):
                out.append((f, node.lineno, ast.unparse(calls[0])[:80]))
    return out


def _val_args(call: ast.Call) -> bool:
    return any(VAL_NAME.match(_ident(_dotted(n) or "")) for a in call.args + [k.value for k in call.keywords]
               for n in ast.walk(a) if isinstance(n, ast.Name | ast.Attribute))


def calibration_on_val(prog: Program) -> list[tuple[Func, Event]]:
    """Calls to Hessian/calibration/GPTQ functions of the script with validation-derived arguments."""
    out = []
    for f in prog.funcs:
        for e in f.events:
            if e.kind == "call" and e.args_tainted and CALIB.search(e.callee or ""):
                if not any(prog.has_score(g) for g in prog.by_name.get(e.callee or "", [])):
                    out.append((f, e))
    return out


def training_with_val(prog: Program) -> list[tuple[Func, Event]]:
    """Validation-fed updates in a loop that also draws training batches (validation mixed into training)."""
    out = []
    for f in prog.funcs:
        loops = {id(n): n for n in ast.walk(f.node) if isinstance(n, ast.For | ast.While)}
        for u, k in _expanded(prog, f):
            if k != "update":
                continue
            for lp in u.loops:
                node = loops.get(lp)
                if node is not None and any(isinstance(n, ast.Name | ast.Attribute)
                                            and TRAIN_DATA.match(_ident(_dotted(n) or "")) for n in ast.walk(node)):
                    out.append((f, u))
                    break
    return out


@dataclass
class Origin:
    """One expression a value may have come from, with the function that evaluates it (None: module or class
    level) and its file."""

    expr: ast.expr
    func: Func | None
    file: str


class Untraceable(Exception):
    """The origins of a value could not be followed (the message says where)."""


class Origins:
    """Where a value comes from, followed backwards through the program without running it: a local name to its
    assignments, a parameter to the arguments of every call of its function (or its default), an attribute to
    every assignment of that attribute name in the program (and a dataclass field's default and constructor
    arguments), a call of a function of the program to its return values. It over-approximates (every object's
    attribute of that name), so what holds of every origin holds of the value; what it cannot follow raises
    :class:`Untraceable`."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.func_of: dict[int, Func] = {id(f.node): f for f in prog.funcs}
        self.owner: dict[int, Func | None] = {}  # id(node) → innermost enclosing function
        self.class_of: dict[int, ast.ClassDef] = {}  # id(function node) → its class
        self.classes: dict[str, list[ast.ClassDef]] = {}
        self.attrs: dict[str, list[Origin]] = {}
        self.calls: list[tuple[ast.Call, Func | None, str]] = []
        self.instances: dict[str, set[str]] = {}  # class → attribute and local names holding an instance of it
        for file, tree in prog.module_bodies.items():
            self._walk(tree, None, file, None)
        for call, func, file in self.calls:  # dataclass-style constructors: Context(cos, sin, mask=m)
            name = _ident(_dotted(call.func) or "")
            for cls in self.classes.get(name, []):
                if any(isinstance(s, ast.FunctionDef) and s.name == "__init__" for s in cls.body):
                    continue
                fields = [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
                for fname, a in zip(fields, call.args, strict=False):
                    self.attrs.setdefault(fname, []).append(Origin(a, func, file))
                for k in call.keywords:
                    if k.arg in fields:
                        self.attrs.setdefault(k.arg, []).append(Origin(k.value, func, file))

    def _walk(self, node: ast.AST, func: Func | None, file: str, cls: ast.ClassDef | None) -> None:
        for child in ast.iter_child_nodes(node):
            self.owner[id(child)] = func
            if isinstance(child, ast.ClassDef):
                self.classes.setdefault(child.name, []).append(child)
                for s in child.body:  # dataclass fields with a default: `mask: Tensor | None = None`
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name) and s.value is not None:
                        self.attrs.setdefault(s.target.id, []).append(Origin(s.value, None, file))
                self._walk(child, func, file, child)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                if cls is not None:
                    self.class_of[id(child)] = cls
                self._walk(child, self.func_of.get(id(child)), file, None)
                continue
            if isinstance(child, ast.Call):
                self.calls.append((child, func, file))
            if isinstance(child, ast.Assign | ast.AnnAssign) and child.value is not None:
                targets = child.targets if isinstance(child, ast.Assign) else [child.target]
                for t, v in self._pairs(targets, child.value):
                    if isinstance(t, ast.Attribute):
                        self.attrs.setdefault(t.attr, []).append(Origin(v, func, file))
                    if isinstance(v, ast.Call) and isinstance(t, ast.Attribute | ast.Name):
                        key = t.attr if isinstance(t, ast.Attribute) else t.id
                        self.instances.setdefault(_ident(_dotted(v.func) or ""), set()).add(key)
            self._walk(child, func, file, cls)

    @staticmethod
    def _pairs(targets: list[ast.AST], value: ast.expr):
        for t in targets:
            if isinstance(t, ast.Tuple | ast.List) and isinstance(value, ast.Tuple | ast.List) and \
                    len(t.elts) == len(value.elts):
                yield from zip(t.elts, value.elts, strict=True)
            elif isinstance(t, ast.Tuple | ast.List):
                for e in t.elts:
                    yield e, ast.Constant(value=...)  # unpacked from an expression: not followed
            else:
                yield t, value

    # -- the three ways back ----------------------------------------------------------------------
    def name(self, func: Func | None, name: str, file: str) -> list[Origin]:
        """The values a name may hold in ``func``: its assignments there, the arguments of its parameter, else the
        enclosing function's or the module's binding."""
        scope = func
        while scope is not None:
            found: list[Origin] = []
            for n in self._own_nodes(scope.node):
                if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None:
                    targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                    found += [Origin(v, scope, file) for t, v in self._pairs(targets, n.value)
                              if isinstance(t, ast.Name) and t.id == name]
                elif isinstance(n, ast.AugAssign | ast.For | ast.AsyncFor | ast.withitem | ast.NamedExpr) and \
                        any(isinstance(x, ast.Name) and x.id == name for x in ast.walk(
                            n.target if not isinstance(n, ast.withitem) else (n.optional_vars or ast.Pass()))):
                    raise Untraceable(f"`{name}` is rebound in {scope.name} ({file}:{getattr(n, 'lineno', '?')})")
            if name in scope.params:
                return found + self.param(scope, name)
            if found:
                return found
            scope = self.prog.parent.get(id(scope))
        tree = self.prog.module_bodies.get(file)
        found = [Origin(v, None, file) for s in (tree.body if tree else []) if isinstance(s, ast.Assign)
                 for t, v in self._pairs(s.targets, s.value) if isinstance(t, ast.Name) and t.id == name]
        if not found:
            raise Untraceable(f"no assignment of `{name}` found")
        return found

    def _own_nodes(self, fn: ast.AST):
        """The nodes of a function's body, not those of the functions and classes defined in it."""
        todo = list(ast.iter_child_nodes(fn))
        while todo:
            n = todo.pop()
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
                continue
            yield n
            todo.extend(ast.iter_child_nodes(n))

    def param(self, func: Func, name: str) -> list[Origin]:
        """The arguments every call of ``func`` passes for parameter ``name`` (its default where a call omits it)."""
        a = func.node.args
        positional = [x.arg for x in a.posonlyargs + a.args]
        defaults = dict(zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True))
        defaults |= {x.arg: d for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None}
        cls = self.class_of.get(id(func.node))
        bound = cls is not None and positional[:1] in (["self"], ["cls"])
        if bound and name == positional[0]:
            raise Untraceable(f"`{name}` is the instance of {cls.name}")  # type: ignore[union-attr]
        sites = self.call_sites(func, cls)
        if not sites:
            raise Untraceable(f"no call of {func.name}() found for its parameter `{name}`")
        out: list[Origin] = []
        for call, caller, file in sites:
            if any(isinstance(x, ast.Starred) for x in call.args) or any(k.arg is None for k in call.keywords):
                raise Untraceable(f"{func.name}() is called with *args/**kwargs ({file}:{call.lineno})")
            kw = {k.arg: k.value for k in call.keywords}
            i = positional.index(name) - (1 if bound else 0) if name in positional else None
            if name in kw:
                out.append(Origin(kw[name], caller, file))
            elif i is not None and 0 <= i < len(call.args):
                out.append(Origin(call.args[i], caller, file))
            elif name in defaults:
                out.append(Origin(defaults[name], None, func.file))
        return out

    def call_sites(self, func: Func, cls: ast.ClassDef | None) -> list[tuple[ast.Call, Func | None, str]]:
        """Calls that may run ``func``: by its name; a constructor for ``__init__``; for ``forward``/``__call__``
        a call of a name or attribute that holds an instance of its class (``self.attn(x)``)."""
        out = []
        holders = self.instances.get(cls.name, set()) if cls is not None else set()
        for call, caller, file in self.calls:
            callee = _ident(_dotted(call.func) or "")
            if func.name == "__init__" and cls is not None:
                hit = callee == cls.name
            elif func.name in ("forward", "__call__") and cls is not None:
                hit = callee == func.name or (callee in holders and not isinstance(call.func, ast.Call))
            else:
                hit = callee == func.name
            if hit:
                out.append((call, caller, file))
        return out

    def attribute(self, attr: str) -> list[Origin]:
        """Every value assigned to an attribute of this name anywhere in the program (and dataclass defaults)."""
        found = self.attrs.get(attr, [])
        if not found:
            raise Untraceable(f"no assignment of `.{attr}` found")
        return found

    def returns(self, call: ast.Call, file: str | None = None) -> list[Origin]:
        """The return values of the program's functions a call (in ``file``) may run."""
        funcs = self.prog.resolve(call, file)
        out = []
        for g in funcs:
            out += [Origin(n.value, g, g.file) for n in self._own_nodes(g.node)
                    if isinstance(n, ast.Return) and n.value is not None]
        return out
