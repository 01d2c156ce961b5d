"""``export``: how the trained weights become the artifact (scheme, cap, calibration, the budget search)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pgolf.config.overrides import _check


@dataclass
class ExportConfig:
    """How the trained weights become the artifact (CATALOGUE §1.7, §2.5)."""

    scheme: str = "int8_zlib"
    """Export scheme (``pgolf.export.driver.EXPORT_SCHEMES``): ``int8_zlib`` the baseline's per-row
    int8 + zlib-9; ``int6_gptqlite_zstd`` [03-22]; ``gptq6_emb7_brotli`` [04-14]; ``budget`` the
    byte-budget search (``pgolf.export.search``) filling ``budget_bytes``."""
    budget_bytes: int = 16_000_000
    """Artifact cap (code + model bytes), decimal bytes."""
    fit: Literal["prune", "off"] = "prune"
    """A one-payload scheme's artifact over the cap (model + code bytes > ``budget_bytes``): ``prune`` zeroes
    its cheapest quantized ±1 entries until it fits (selective ±1 pruning, [03-25] PR #1019; a record's own
    recipe whose code was smaller than pgolf's bundle, say), ``off`` leaves it over (the run reports it).
    Under the cap nothing changes. (:func:`pgolf.export.driver.fit_to_cap`)"""
    code_form: Literal["compact", "readable"] = "compact"
    """Which form of the single-file ``train_gpt.py`` (``pgolf bundle``) is shipped and charged as the code
    bytes: ``compact`` (minified, compressed, self-extracting, as records 04-03…04-09 shipped theirs) or
    ``readable`` (every module's source under a banner). See :mod:`pgolf.bundler`."""
    keep_float_max_numel: int = 65536
    """``int8_zlib``: float tensors with at most this many elements are stored as fp16/fp32, not
    quantized (the baseline's 65,536; lower it for narrow models whose matrices are that small)."""
    calib_source: Literal["auto", "train", "generated"] = "auto"
    """Where GPTQ Hessians come from: ``auto`` (the run's ``hessians.safetensors``, collected on
    training tokens inside the training budget, see ``train.calib_reserve_seconds``; else
    self-generated), ``train`` (require the saved ones) or ``generated`` ([03-25]). Never validation."""
    calib_seqs: int = 64
    """Self-generated calibration sequences ([03-25]: 64 × 2048, temperature 0.8)."""
    calib_seq_len: int = 0
    """Tokens per generated sequence (0 = ``train.seq_len``)."""
    calib_temperature: float = 0.8
    calib_seed: int = 1337
    search_bits: tuple[int, ...] = (4, 5, 6, 7, 8)
    """``budget``: grid bits tried per tensor group (``--set export.search_bits=5,6``)."""
    search_k: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 13.0, 15.0, 17.0, 20.0, 24.0)
    """``budget``: SDClip multipliers k tried (clip = k·std(row)), in addition to GPTQ-lite's search
    (12, 13, 15 are [04-14]'s, so its recipe is one of the plans searched)."""
    search_gptq: bool = True
    """``budget``: also try full GPTQ for every grid (needs Hessians)."""
    search_lqer_rank: int = 4
    """``budget``: LQER rank tried on top of the best grids ([04-27a]: 4); 0 = no LQER options."""
    search_lqer_top: int = 1
    """``budget``: LQER corrects this many tensors of a group (largest error first)."""
    search_max_options: int = 10
    """``budget``: grids per group whose compressed bytes are measured exactly (after a screen by
    entropy; the rest are dominated)."""
    search_weights: Literal["hessian", "loss"] = "loss"
    """``budget``: how errors of different groups are compared: ``hessian`` (Σ tr(E H Eᵀ) as is) or
    ``loss`` (each group's tr(E H Eᵀ) rescaled by its measured loss increase on self-generated text)."""
    verify_plans: int = 4
    """``budget``: evaluate this many candidate plans on self-generated text and keep the best (0 = off)."""
    verify_seqs: int = 16
    """Self-generated sequences for the loss checks (a different seed from the calibration ones)."""

    def __post_init__(self) -> None:
        _check(self.budget_bytes > 0, "export.budget_bytes must be > 0")
        _check(self.keep_float_max_numel >= 0, "export.keep_float_max_numel must be >= 0")
        _check(self.calib_seqs >= 1 and self.calib_seq_len >= 0, "export.calib_seqs must be >= 1, calib_seq_len >= 0")
        _check(self.calib_temperature >= 0, "export.calib_temperature must be >= 0")
        _check(self.search_lqer_rank >= 0 and self.search_lqer_top >= 0, "export.search_lqer_* must be >= 0")
        _check(self.search_max_options >= 1, "export.search_max_options must be >= 1")
        _check(self.verify_plans >= 0 and self.verify_seqs >= 1, "export.verify_plans >= 0, verify_seqs >= 1")
        _check(bool(self.search_bits) and all(2 <= b <= 8 for b in self.search_bits),
               "export.search_bits must list integers in 2..8")
        _check(bool(self.search_k) and all(k > 0 for k in self.search_k), "export.search_k must list values > 0")
