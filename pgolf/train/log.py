"""The run log: rank 0 writes ``train.log`` in the run directory and echoes to stdout.

Every log opens with the command, the full config, library versions and hardware, so the log
alone reproduces the run (modded-nanogpt style).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TextIO

import torch

from pgolf import dist, logformat


def versions() -> dict[str, str]:
    import numpy

    import pgolf

    out = {
        "pgolf": pgolf.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    for mod in ("sentencepiece", "safetensors", "zstandard", "brotli"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "?")
        except ImportError:
            out[mod] = "missing"
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> dict[str, object]:
    hw: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "world_size": dist.world_size(),
    }
    if torch.cuda.is_available():
        hw["cuda"] = torch.version.cuda
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        try:
            hw["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            pass
    return hw


class RunLog:
    """Append-only log for one run; a no-op on ranks other than 0."""

    def __init__(self, path: str | Path | None, echo: bool = True):
        self.enabled = dist.is_main()
        self.echo = echo and self.enabled
        self._f: TextIO | None = None
        if self.enabled and path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str, *, echo: bool | None = None) -> None:
        if not self.enabled:
            return
        if self._f is not None:
            self._f.write(msg + "\n")
            self._f.flush()
        if self.echo if echo is None else (echo and self.enabled):
            print(msg, flush=True)

    def header(self, config_json: str) -> None:
        hw = hardware()
        smi = hw.pop("nvidia_smi", None)
        *lines, config = logformat.header_lines(" ".join(sys.argv), versions(), hw, config_json)
        for line in lines:
            self(line, echo=False)
        if smi:
            self(smi, echo=False)
        self(config, echo=False)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
