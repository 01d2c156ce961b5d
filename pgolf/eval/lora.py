"""Batched per-document LoRA for test-time training: one independent adapter per batch row.

Sources: [03-17a] LoRA TTT (rank 8 on lm_head, c_q, c_v); [04-10] PR #1530 (Q, K, V, O, a d→d LoRA
beside the MLP, lm_head); PR #1767 in [04-23] (output scaled by α/r; "warm-start A": at a reset only
B is zeroed). CATALOGUE §2.6. Written here because peft does not batch per-document adapters
(DESIGN.md "Dependencies").

For a linear map y = W x (x ∈ R^{d_in}) and batch row b (one document):

    y_b = W x_b + (α/r) · B_b A_b x_b        A_b ∈ R^{r×d_in} ~ U(±1/√d_in),  B_b ∈ R^{d_out×r} = 0

so a fresh adapter is the identity on the model. Given the document's index j, A is drawn from a
generator seeded by (seed, j) alone (:meth:`BatchedLoRA.reset` with ``docs``), so a document's adapter
does not depend on which row, rank or order it was scored in. Rows share nothing: the loss is a sum of per-row
losses, Adam/SGD act elementwise, so row b's adapter only ever sees row b's document.

It is a model transform applied from outside the model (DESIGN.md): forward hooks on the attention
projections (``q`` → c_q, ``k`` → c_k, ``v`` → c_v, ``o`` → proj) and on each MLP (``mlp``: the d→d LoRA
reads the MLP's input, its output is added to the MLP's), and, for ``head``, the ``adapter=`` argument
of :meth:`pgolf.model.gpt.GPT.forward`, which adds (α/r)·B A h to the logits of the final hidden state h
before the softcap. A block that runs several times (depth recurrence) uses one adapter every time
(``slots="block"``), or one per pass (``slots="virtual"``: the records' one slot per virtual layer, [04-14]
onward, ``num_slots = len(encoder_indices) + len(decoder_indices)`` when looping): the hooked modules'
calls are counted from each forward's start, and the k-th call of a module uses its k-th adapter (slot
``NAME_pK``).
:meth:`BatchedLoRA.detach` removes every hook; the model's parameters and state dict never change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

TARGETS = ("q", "k", "v", "o", "mlp", "head")


class LoRASlots(nn.Module):
    """``bsz`` independent rank-r adapters of one map d_in → d_out: A [bsz, r, d_in], B [bsz, d_out, r]."""

    def __init__(self, bsz: int, d_in: int, d_out: int, rank: int, scale: float, generator: torch.Generator,
                 device: torch.device) -> None:
        super().__init__()
        self.bound = 1.0 / math.sqrt(d_in)
        self.scale = scale
        self.generator = generator
        self.A = nn.Parameter(torch.empty(bsz, rank, d_in, device=device))
        self.B = nn.Parameter(torch.zeros(bsz, d_out, rank, device=device))
        self.reset(warm_start_a=False)

    def reset(self, warm_start_a: bool, rows: Tensor | None = None) -> None:
        """B = 0 and (unless ``warm_start_a``) A redrawn, for ``rows`` (int64 row indices; None = all)."""
        idx = torch.arange(self.A.shape[0]) if rows is None else rows.to(torch.int64).cpu()
        if idx.numel() == 0:
            return
        with torch.no_grad():
            self.B[idx.to(self.B.device)] = 0.0
            if not warm_start_a:
                a = torch.rand((idx.numel(), *self.A.shape[1:]), generator=self.generator, dtype=torch.float32)
                self.A[idx.to(self.A.device)] = ((a * 2 - 1) * self.bound).to(self.A.device)

    def forward(self, x: Tensor) -> Tensor:
        """x [bsz, T, d_in] → [bsz, T, d_out]."""
        if x.shape[0] != self.A.shape[0]:
            raise ValueError(f"LoRA batch of {self.A.shape[0]} documents got an input batch of {x.shape[0]}")
        h = torch.bmm(x, self.A.transpose(1, 2).to(x.dtype))  # [bsz, T, r]
        return torch.bmm(h, self.B.transpose(1, 2).to(x.dtype)) * self.scale


def _calls_per_forward(model: nn.Module) -> dict[nn.Module, int]:
    """How many times each adapted module runs in one forward of ``model`` as planned now (``model.plan``,
    its looping state): a block's attention projections once per virtual layer on it, its MLP once per
    such layer without an untied MLP, each untied MLP once per layer that uses it."""
    counts: dict[nn.Module, int] = {}

    def bump(m: nn.Module) -> None:
        counts[m] = counts.get(m, 0) + 1

    for layer in model.plan:
        blk = model.blocks[layer.block]
        for m in (blk.attn.c_q, blk.attn.c_k, blk.attn.c_v, blk.attn.proj):
            bump(m)
        bump(model.recur_mlps[layer.mlp_slot] if layer.mlp_slot is not None else blk.mlp)
    return counts


class BatchedLoRA(nn.Module):
    """The adapters of every targeted layer of a GPT, for ``bsz`` documents side by side."""

    def __init__(self, model: nn.Module, bsz: int, rank: int, targets: tuple[str, ...], alpha: float = 0.0,
                 seed: int = 0, slots: str = "block") -> None:
        super().__init__()
        bad = sorted(set(targets) - set(TARGETS))
        if bad:
            raise ValueError(f"unknown LoRA target {bad[0]!r} (one of {', '.join(TARGETS)})")
        self.bsz, self.rank, self.targets = bsz, rank, tuple(targets)
        scale = (alpha or rank) / rank
        device = next(model.parameters()).device
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        if slots not in ("block", "virtual"):
            raise ValueError(f"LoRA slots must be 'block' or 'virtual', got {slots!r}")
        self.slots = nn.ModuleDict()
        self._hooked: list[tuple[nn.Module, list[str]]] = []
        self._model = [model]  # in a list: an nn.Module attribute would make the model a submodule (its parameters ours)
        d = model.cfg.model_dim
        kv = model.cfg.num_kv_heads * model.cfg.head_dim
        passes = _calls_per_forward(model) if slots == "virtual" else {}

        def add(name: str, module: nn.Module, d_in: int, d_out: int) -> None:
            names = [name] if slots == "block" else [f"{name}_p{k}" for k in range(max(passes.get(module, 1), 1))]
            for n in names:
                self.slots[n] = LoRASlots(bsz, d_in, d_out, rank, scale, self.generator, device)
            self._hooked.append((module, names))

        for i, blk in enumerate(model.blocks):
            a = blk.attn
            for t, mod, d_out in (("q", a.c_q, a.c_q.out_features), ("k", a.c_k, kv), ("v", a.c_v, kv), ("o", a.proj, d)):
                if t in targets:
                    add(f"{t}{i}", mod, mod.in_features, d_out)
            if "mlp" in targets:
                add(f"mlp{i}", blk.mlp, d, d)
        if "mlp" in targets:
            for j, m in enumerate(getattr(model, "recur_mlps", [])):
                add(f"rmlp{j}", m, d, d)
        if "head" in targets:
            self.slots["head"] = LoRASlots(bsz, d, model.cfg.vocab_size, rank, scale, self.generator, device)
        self._handles: list = []
        self.attach()

    def attach(self) -> None:
        """Install the forward hooks (done at construction)."""
        if self._handles:
            return
        calls = [0] * len(self._hooked)
        for i, (module, names) in enumerate(self._hooked):
            if len(names) == 1:
                lora = self.slots[names[0]]
                self._handles.append(module.register_forward_hook(
                    lambda _m, args, out, lora=lora: out + lora(args[0]).to(out.dtype)))
                continue
            loras = [self.slots[n] for n in names]

            def hook(_m, args, out, i=i, loras=loras):  # the k-th call of this forward uses the k-th adapter
                k = calls[i]
                calls[i] += 1
                if k >= len(loras):
                    raise RuntimeError(f"LoRA slots: a module ran {k + 1} times in one forward, planned for {len(loras)}")
                return out + loras[k](args[0]).to(out.dtype)

            self._handles.append(module.register_forward_hook(hook))
        if any(len(names) > 1 for _, names in self._hooked):
            def restart(_m, _args):
                calls[:] = [0] * len(calls)

            self._handles.append(self._model[0].register_forward_pre_hook(restart))

    def detach(self) -> None:
        """Remove every hook: the model computes exactly what it did before."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def head(self):
        """The ``adapter=`` argument of GPT.forward (None without a head adapter)."""
        return self.slots["head"] if "head" in self.slots else None

    def reset(self, warm_start_a: bool = False, rows: Tensor | None = None, docs=None) -> None:
        """New documents in ``rows`` (None = all): B = 0; A redrawn unless ``warm_start_a``. With ``docs``
        (one document index per row) row i's A comes from a generator seeded by (seed, docs[i]) only."""
        if docs is None or warm_start_a:
            for s in self.slots.values():
                s.reset(warm_start_a, rows)
            return
        idx = rows.to(torch.int64).cpu()
        if idx.numel() == 0:
            return
        sizes = [s.A[0].numel() for s in self.slots.values()]
        draws = torch.empty(idx.numel(), sum(sizes))
        g = torch.Generator()
        for i, d in enumerate(docs):
            g.manual_seed((int(self.seed) * 0x9E3779B97F4A7C15 + int(d) + 1) % (1 << 63))
            torch.rand(sum(sizes), generator=g, out=draws[i])
        with torch.no_grad():
            for s, part in zip(self.slots.values(), draws.split(sizes, dim=1), strict=True):
                dev = idx.to(s.B.device)
                s.B[dev] = 0.0
                s.A[dev] = ((part.view(-1, *s.A.shape[1:]) * 2 - 1) * s.bound).to(s.A.device)


class RowAdam:
    """Adam(W) / SGD-momentum over the [bsz, ...] LoRA tensors with per-row state: each row (document)
    has its own moments and step count, so a row reset mid-stream starts exactly like a fresh optimizer
    (torch's optimizers share one step count per tensor, which would tie a new document's bias
    correction to its neighbours' history). Rows not in ``rows`` are left untouched, decay included.

    Adam: m ← β1 m + (1−β1) g, v ← β2 v + (1−β2) g², p ← p − lr·(m̂/(√v̂ + ε) + wd·p), m̂ = m/(1−β1^t),
    v̂ = v/(1−β2^t) with t the row's own step; SGD: m ← β1 m + g, p ← p − lr·(m + wd·p)."""

    def __init__(self, params: list[nn.Parameter], kind: str, lr: float, beta1: float, beta2: float,
                 weight_decay: float, eps: float = 1e-10) -> None:
        self.params, self.kind = params, kind
        self.lr, self.b1, self.b2, self.wd, self.eps = lr, beta1, beta2, weight_decay, eps
        bsz = params[0].shape[0]
        self.t = torch.zeros(bsz, dtype=torch.float64)
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params] if kind == "adam" else []

    def reset(self, rows: Tensor) -> None:
        idx = rows.to(torch.int64).cpu()
        self.t[idx] = 0
        for buf in self.m + self.v:
            buf[idx.to(buf.device)] = 0.0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, rows: Tensor) -> None:
        """One step for the rows marked in the bool mask ``rows`` [bsz]."""
        mask = rows.cpu()
        if not bool(mask.any()):
            return
        self.t[mask] += 1
        t = self.t
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.ndim - 1)
            sel = mask.to(p.device).view(shape).to(p.dtype)
            g, m = p.grad, self.m[i]
            if self.kind == "adam":
                v = self.v[i]
                m.copy_(torch.where(sel.bool(), self.b1 * m + (1 - self.b1) * g, m))
                v.copy_(torch.where(sel.bool(), self.b2 * v + (1 - self.b2) * g * g, v))
                c1 = (1 - self.b1 ** t.clamp(min=1)).to(p.dtype).to(p.device).view(shape)
                c2 = (1 - self.b2 ** t.clamp(min=1)).to(p.dtype).to(p.device).view(shape)
                upd = (m / c1) / ((v / c2).sqrt() + self.eps)
            else:
                m.copy_(torch.where(sel.bool(), self.b1 * m + g, m))
                upd = m
            p.sub_(sel * self.lr * (upd + self.wd * p))
