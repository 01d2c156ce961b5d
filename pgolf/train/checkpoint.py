"""Resumable training checkpoints without pickle.

A checkpoint is two files in the run directory:

- ``checkpoint.safetensors``: every tensor — model parameters (``model.<name>``), optimizer state
  (``optim.<i>.<param index>.<key>``), weight averages (``avg.<kind>.<name>``; ``avg.live.<name>`` =
  the last live weights when ``model.<name>`` holds the applied average) and RNG states (``rng.<name>``);
- ``checkpoint.json``: everything else (step, training seconds, loader position, optimizer
  hyper-parameters and non-tensor state, the config) plus the sha256 of the tensor file.

The tensor file is written first and the JSON last, each atomically; the JSON names the hash of the
tensor file it belongs to, so a crash between the two writes is detected instead of silently
mixing two checkpoints. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from pgolf import fileio
from pgolf.errors import DataError

TENSORS = "checkpoint.safetensors"
STATE = "checkpoint.json"
FORMAT = "pgolf-checkpoint-v1"


@dataclass
class Checkpoint:
    step: int
    train_seconds: float
    tokens_seen: int
    loader_state: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_states: list[dict[str, Any]]
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    averages: dict[str, torch.Tensor] = field(default_factory=dict)
    """Weight-average tensors (EMA / SWA sums, and the live weights of a run that ended on its average)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _split_optimizer_state(i: int, sd: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move the tensors of ``optimizer.state_dict()`` into ``tensors``; return the JSON-able rest."""
    state_json: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{i}.{pid}.{k}"] = v.detach().cpu().contiguous()
                entry[k] = {"tensor": f"optim.{i}.{pid}.{k}"}
            else:
                entry[k] = v
        state_json[str(pid)] = entry
    return {"state": state_json, "param_groups": sd["param_groups"]}


def _join_optimizer_state(js: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in js["state"].items():
        state[int(pid)] = {
            k: (tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v) for k, v in entry.items()
        }
    return {"state": state, "param_groups": js["param_groups"]}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    js = {
        "python": [list(random.getstate()[1]), random.getstate()[0], random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, js


def restore_rng(tensors: dict[str, torch.Tensor], js: dict[str, Any]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    if "python" in js:
        internal, version, gauss = js["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in js:
        name, keys, pos, has_gauss, cached = js["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _names(suffix: str) -> tuple[str, str]:
    return TENSORS.replace(".safetensors", f"{suffix}.safetensors"), STATE.replace(".json", f"{suffix}.json")


def save_checkpoint(run_dir: str | Path, ckpt: Checkpoint, suffix: str = "") -> None:
    """Write ``ckpt``; ``suffix`` (e.g. ``.rank3``) separates the per-rank files of a distributed run
    (Muon keeps each matrix's momentum only on the rank that orthogonalizes it)."""
    run_dir = Path(run_dir)
    tensors_name, state_name = _names(suffix)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in ckpt.model_state.items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    for k, v in ckpt.averages.items():
        tensors[f"avg.{k}"] = v.detach().cpu().contiguous()
    optim_js = [_split_optimizer_state(i, sd, tensors) for i, sd in enumerate(ckpt.optimizer_states)]
    rng_t, rng_js = capture_rng() if not ckpt.rng else (ckpt.rng.get("tensors", {}), ckpt.rng.get("json", {}))
    tensors.update(rng_t)
    with fileio.atomic_path(run_dir / tensors_name) as tmp:
        save_file(tensors, str(tmp))
    state = {
        "format": FORMAT,
        "tensors_sha256": _sha256(run_dir / tensors_name),
        "step": ckpt.step,
        "train_seconds": ckpt.train_seconds,
        "tokens_seen": ckpt.tokens_seen,
        "loader_state": ckpt.loader_state,
        "optimizers": optim_js,
        "rng": rng_js,
        "extra": ckpt.extra,
    }
    fileio.write_json(run_dir / state_name, state)


def has_checkpoint(run_dir: str | Path, suffix: str = "") -> bool:
    return (Path(run_dir) / _names(suffix)[1]).exists()


def load_checkpoint(run_dir: str | Path, suffix: str = "") -> Checkpoint:
    run_dir = Path(run_dir)
    tensors_name, state_name = _names(suffix)
    state_path, tensor_path = run_dir / state_name, run_dir / tensors_name
    if not state_path.exists() or not tensor_path.exists():
        raise DataError(f"{run_dir}: no checkpoint ({state_name} + {tensors_name}) to resume from")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{state_path}: unreadable checkpoint state ({e})") from None
    if state.get("format") != FORMAT:
        raise DataError(f"{state_path}: not a {FORMAT} checkpoint")
    if _sha256(tensor_path) != state.get("tensors_sha256"):
        raise DataError(f"{tensor_path}: checksum mismatch with {state_name} (interrupted write or altered file)")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as e:  # safetensors raises its own error types
        raise DataError(f"{tensor_path}: unreadable tensors ({e})") from None
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer_states = [_join_optimizer_state(js, tensors) for js in state["optimizers"]]
    rng_t = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    averages = {k[len("avg.") :]: v for k, v in tensors.items() if k.startswith("avg.")}
    return Checkpoint(
        step=int(state["step"]),
        train_seconds=float(state["train_seconds"]),
        tokens_seen=int(state["tokens_seen"]),
        loader_state=state["loader_state"],
        model_state=model_state,
        optimizer_states=optimizer_states,
        rng={"tensors": rng_t, "json": state.get("rng", {})},
        extra=state.get("extra", {}),
        averages=averages,
    )
