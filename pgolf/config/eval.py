"""``eval``: scoring the reloaded artifact, with its sub-sections ``eval.sliding``, ``eval.ttt`` and
``eval.mix``, and the grammar of evaluation method names (:func:`parse_eval_method`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pgolf.config.overrides import _check
from pgolf.errors import ConfigError


@dataclass
class SlidingConfig:
    """Sliding-window evaluation (``--set eval.sliding.KEY=VALUE``; :mod:`pgolf.eval.sliding`). [03-19e]:
    windows of ``eval.seq_len`` tokens advance by ``stride``; each scores only the targets the previous
    window did not, so every target has at least seq_len − stride + 1 tokens of context."""

    stride: int = 64
    """Targets scored per window after the first (records: 64; 16 in [03-24])."""
    doc_aware: bool = False
    """Windows never reach back past the BOS that starts the target's document (each document is
    windowed on its own); off = one window grid over the whole stream, as the records."""

    def __post_init__(self) -> None:
        _check(self.stride >= 1, "eval.sliding.stride must be >= 1")


@dataclass
class TttConfig:
    """Score-first test-time training (``--set eval.ttt.KEY=VALUE``; :mod:`pgolf.eval.ttt`). Every chunk is
    scored under no-grad before any update that uses it. ``mode``: ``lora`` per-document batched LoRA
    ([03-17a]; [04-10] PR #1530), ``sgd`` chunked full-model SGD over the stream ([03-23] PR #549),
    ``phased`` LoRA with global SGD on the already-scored document prefix ([04-13] PR #1610, [04-14] PR #1626)."""

    mode: Literal["lora", "sgd", "phased"] = "lora"
    lora_rank: int = 16
    """LoRA rank r ([03-17a]: 8; [04-10]: 96; [04-27a]: 80). The defaults of rank, lr, targets and chunk
    were the best tried on the first 60k enwiki validation tokens with the ``cpu`` model (docs/benchmarks.md)."""
    lora_alpha: float = 0.0
    """LoRA output scale α/r (PR #1767: α = 144); 0 = α = r (scale 1)."""
    lora_slots: Literal["block", "virtual"] = "block"
    """With depth recurrence: ``block``, one adapter per physical block, used on every pass; ``virtual``,
    one per pass of the per-layer plan, as the records ([04-14]+ ``BatchedTTTLoRA``: ``num_slots =
    len(encoder_indices) + len(decoder_indices)`` when looping). The same without recurrence."""
    lora_targets: tuple[str, ...] = ("q", "k", "v", "o", "mlp", "head")
    """Adapted layers, from q, k, v, o (attention), mlp (a d→d LoRA beside each MLP) and head (beside the
    LM head). [03-17a]: q, v, head; [04-10]+: all six."""
    chunk: int = 0
    """Targets per chunk: each is scored, then trained on ([03-17a]: 256; [04-10]: 32; [04-14]+: 48). A
    chunk's window is the ``eval.seq_len`` tokens before its end, inside its document, so the cost per
    target is ∝ seq_len / chunk. 0 = min(128, the context), so the default fits every run; a chunk set
    longer than the context is an error."""
    batch_docs: int = 16
    """Documents adapted side by side on each rank, one LoRA slot each (records: 64). Slots take the
    documents from the queue (``order``) and refill as soon as their document is done."""
    order: Literal["length", "stream"] = "length"
    """``lora``/``phased``: the order documents are claimed in, inside each phase's group of documents
    (:mod:`pgolf.eval.ttt`, "Ranks"): ``length`` longest first, as the records' global queue ([04-27a]),
    so the ranks finish together; ``stream`` stream order. Without a budget cut a document's losses do not
    depend on the order. When the clock stops adaptation, which documents were adapted does: under
    ``length`` also on the lengths of later documents, so strict stream-order causality under a binding
    budget needs ``stream``. ``warm_start_a`` always claims in stream order."""
    lora_lr: float = 0.01
    lora_optimizer: Literal["adam", "sgd"] = "adam"
    lora_beta1: float = 0.9
    lora_beta2: float = 0.999
    lora_weight_decay: float = 0.0
    lora_steps: int = 1
    """Optimizer steps per chunk (records: 1)."""
    warm_start_a: bool = False
    """PR #1767: at each document reset only B is zeroed; A keeps what it learned in its slot."""
    sgd_chunk_tokens: int = 32768
    """``sgd``: the stream is cut into chunks of this many targets ([03-23]: 32,768)."""
    sgd_lr: float = 0.002
    """``sgd``: peak SGD learning rate, cosine to 0 across the chunks ([03-23]: 0.002; later 0.005)."""
    sgd_momentum: float = 0.9
    sgd_epochs: int = 3
    sgd_batch_seqs: int = 32
    sgd_clip: float = 1.0
    """Gradient-norm clip of the full-model SGD steps (0 = off)."""
    phases: int = 3
    """``phased``: global SGD phases over the prefix ([04-13]: 1; [04-14]: 3)."""
    prefix_docs: int = 2000
    """``phased``: documents (in stream order) whose scoring is interleaved with global SGD; phase i ends
    after ⌈prefix_docs·i/phases⌉ of them ([04-14]: 2,000; [04-27a]: 2,500)."""
    global_lr: float = 0.001
    """``phased``: global SGD learning rate, cosine over each phase's steps ([04-14]: 0.001)."""
    global_epochs: int = 1

    def __post_init__(self) -> None:
        bad = sorted(set(self.lora_targets) - {"q", "k", "v", "o", "mlp", "head"})
        _check(not bad, f"eval.ttt.lora_targets: unknown target {bad[0] if bad else ''!r} (q, k, v, o, mlp, head)")
        _check(self.lora_rank >= 1 and self.lora_alpha >= 0, "eval.ttt.lora_rank must be >= 1, lora_alpha >= 0")
        _check(self.chunk >= 0 and self.batch_docs >= 1 and self.lora_steps >= 0, "eval.ttt: chunk >= 0, batch_docs >= 1, lora_steps >= 0")
        _check(self.lora_lr >= 0 and self.sgd_lr >= 0 and self.global_lr >= 0, "eval.ttt: learning rates must be >= 0")
        _check(0 <= self.lora_beta1 < 1 and 0 <= self.lora_beta2 < 1 and 0 <= self.sgd_momentum < 1,
               "eval.ttt: betas and momentum in [0, 1)")
        _check(self.lora_weight_decay >= 0 and self.sgd_clip >= 0, "eval.ttt: weight decay and clip >= 0")
        _check(self.sgd_chunk_tokens >= 1 and self.sgd_epochs >= 0 and self.sgd_batch_seqs >= 1,
               "eval.ttt: sgd_chunk_tokens, sgd_batch_seqs >= 1, sgd_epochs >= 0")
        _check(self.phases >= 0 and self.prefix_docs >= 0 and self.global_epochs >= 0, "eval.ttt: phases, prefix_docs, global_epochs >= 0")


@dataclass
class MixConfig:
    """Causal online mixing (``--set eval.mix.KEY=VALUE``; :mod:`pgolf.eval.mix`): an interpolated n-gram
    model over the tokens scored so far (absolute discounting, PPM-style escapes), mixed with the LM.
    ``linear``: p = w·p_LM + (1 − w)·p_ngram; ``tilt``: the token-only tilt of [04-09a] (PR #1420 kernel,
    #2135), p'(t) = p_LM(t)·e^{β·[t = hint]} / (1 + p_LM(hint)(e^β − 1)), hint = what followed the last
    occurrence of the longest matching context."""

    mode: Literal["linear", "tilt", "cm"] = "linear"
    """``cm``: context mixing over each token's bits (:mod:`pgolf.eval.cm`): order-0..6, word, document,
    match and LM-top-choice models and the LM's path probabilities mixed in the logistic domain by weights
    learned online (paq8/lpaq/zpaq/cmix); ``max_order``/``discount``/``learn`` are the n-gram modes' own."""
    max_order: int = 6
    """Longest context (tokens) of the n-gram model; orders 0..max_order are interpolated."""
    discount: float = 0.7
    """Absolute discount D in (0, 1] of every order (0.5 is PPM-D's escape). 6 / 0.7 were the best of
    orders 4, 6, 8 × D 0.3, 0.5, 0.7 for the ``cpu`` model on enwiki (docs/benchmarks.md)."""
    learn: bool = True
    """Learn the weight online: for each context bucket (longest matching order, its count), the grid
    value with the best log-likelihood on the targets scored before the current ``update_every``
    block. Off: the fixed ``lm_weight`` / ``tilt_beta``."""
    lm_weight: float = 0.8
    """``linear``: weight of the LM (fixed, or before a bucket has data)."""
    tilt_beta: float = 2.0
    """``tilt``: β (fixed, or before a bucket has data) ([04-09a]: 2.0)."""
    tilt_min_order: int = 2
    """``tilt``: a hint needs a matching context of at least this many tokens."""
    update_every: int = 2048
    """Learned weights are refit after every block of this many targets."""
    cm_lr: float = 0.02
    """``cm``: the mixers' learning rate (online gradient descent on the code length, in nats per st unit)."""
    cm_chunk: int = 64
    """``cm``: targets per chunk; the learned state is updated after each chunk (exactly causal)."""
    cm_components: str = "orders,words,doc,lmtop,match,mixer2,tree"
    """``cm``: ``all`` or a comma list of orders, words, sparse, doc, lmtop, match, apm, mixer2, tree
    (:data:`pgolf.eval.cm.mixer.COMPONENTS`); the default leaves out the sparse models and the APM, which
    did not pay on enwiki (docs/benchmarks.md, the ablation)."""

    def __post_init__(self) -> None:
        _check(self.max_order >= 0 and 0 < self.discount <= 1, "eval.mix: max_order >= 0, discount in (0, 1]")
        _check(self.cm_lr >= 0 and self.cm_chunk >= 1, "eval.mix: cm_lr >= 0, cm_chunk >= 1")
        _comps = {c.strip() for c in self.cm_components.split(",") if c.strip()}
        _known = {"orders", "words", "sparse", "doc", "lmtop", "match", "apm", "mixer2", "tree"}
        _check(_comps == {"all"} or _comps <= _known,
               "eval.mix.cm_components: 'all' or a comma list of orders, words, sparse, doc, lmtop, match, apm, mixer2, "
               "tree")
        _check(0 <= self.lm_weight <= 1 and self.tilt_beta >= 0, "eval.mix: lm_weight in [0, 1], tilt_beta >= 0")
        _check(self.tilt_min_order >= 1 and self.update_every >= 1, "eval.mix: tilt_min_order, update_every >= 1")


EVAL_BASES = ("plain", "sliding", "ttt")
EVAL_METHODS = ("plain", "sliding", "ttt", "mix", "sliding+mix", "ttt+mix")
"""``EvalConfig.method`` / ``pgolf eval --method`` names (:mod:`pgolf.eval.methods`)."""


def ttt_ssm_message(mode: str) -> str:
    """Why LoRA test-time training refuses a model with SSM layers (one line; :mod:`pgolf.eval.ttt` says it too)."""
    return f"eval.ttt.mode={mode} (LoRA) adapts attention, which SSM layers (model.ssm_layers) lack: use eval.ttt.mode=sgd"


def parse_eval_method(name: str) -> tuple[str, bool]:
    """(base, mixed) of an evaluation method name; ConfigError for anything else."""
    n = name.strip().lower()
    if n in ("mix", "plain+mix"):
        return "plain", True
    base, _, extra = n.partition("+")
    if base in EVAL_BASES and extra in ("", "mix"):
        return base, extra == "mix"
    raise ConfigError(f"unknown eval method {name!r} (one of {', '.join(EVAL_METHODS)})")


@dataclass
class EvalConfig:
    """Evaluation of the reloaded artifact (CATALOGUE §1.2, §2.6)."""

    seq_len: int = 0
    """Context per scored sequence (0 = train.seq_len; resolved: :attr:`RunConfig.eval_seq_len`)."""
    batch_tokens: int = 524288
    """Global validation tokens per forward batch (``VAL_BATCH_SIZE``)."""
    compile: bool | Literal["auto"] = "auto"
    """Wrap the evaluated model in ``torch.compile`` (one compile per evaluation, plus one for a short last
    batch): ``auto`` on CUDA, eager on a CPU, as ``train.compile`` (:func:`pgolf.compile.resolve`). The
    ``cpu`` and ``demo`` presets turn it on, having measured that it pays on a CPU (docs/benchmarks.md)."""
    budget_seconds: float = 600.0
    """Wallclock of one ``pgolf eval`` method, from opening the artifact to the last token (load,
    dequantize, compile warm-up, precompute, scoring, adaptation); adaptation degrades to stay inside it
    (:mod:`pgolf.eval.clock`). 0 = no budget."""
    method: Literal["plain", "sliding", "ttt", "mix", "sliding+mix", "ttt+mix"] = "plain"
    """The evaluation that scores ``pgolf run`` (and its bundle, as a record's ``train_gpt.py`` scores
    itself): after the plain round-trip line, any other method runs as ``pgolf eval --method`` does
    (``eval.sliding`` / ``eval.ttt`` / ``eval.mix``, on its own ``budget_seconds`` clock started when the
    artifact is opened) and its ``final_<scheme>_<method>_exact`` line and metrics are the run's score."""
    sliding: SlidingConfig = field(default_factory=SlidingConfig)
    ttt: TttConfig = field(default_factory=TttConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    var_samples: int = 4
    """``model.objective=mdlm``: masking samples per validation sequence of the variational bound
    (:mod:`pgolf.eval.variational`); the standard error of ``val_var_bpb`` is estimated from them (≥ 2) and
    falls as 1/√samples; the cost is ``var_samples`` plain evaluations."""
    var_seed: int = 0
    """Seed of the bound's masks (each depends only on this seed, the sequence and the sample)."""

    def __post_init__(self) -> None:
        _check(self.seq_len >= 0, "eval.seq_len must be >= 0")
        _check(self.batch_tokens >= 1, "eval.batch_tokens must be >= 1")
        _check(self.budget_seconds >= 0, "eval.budget_seconds must be >= 0")
        _check(self.var_samples >= 2, "eval.var_samples must be >= 2 (the bound's standard error needs two samples)")
