"""Bits per byte of general-purpose compressors on the validation text: the bar a model must beat.

Maths: a compressor is a (non-causal, whole-stream) language model whose code length is its
output size, so its score on the same scale as ``val_bpb_raw`` is

    bpb = 8 · compressed_bytes / raw_bytes,    raw_bytes = Σ_d len(utf8(text_d)),

the denominator pgolf's ``val_bytes_raw`` counts (original UTF-8 bytes of the documents, the
tokenizer-agnostic figure of RULES.md "Scoring"; CATALOGUE §1.2). Side information that the
decoder needs and that is not in the output is charged like model bytes: a zstd dictionary
trained on the training text gives ``bpb_total = 8 · (payload + dictionary) / raw_bytes``.

Stream: the documents' UTF-8 texts joined with one ``b"\\n"`` between consecutive documents
(n − 1 separator bytes). The model sees a BOS token at each document start instead; the
separators are compressed but not counted in ``raw_bytes`` (a handicap of at most n − 1 bytes'
worth of code, ≈ 0 in practice since "\\n" is the commonest paragraph break).

Compressors (each output is decompressed and compared with the input before it is reported):
PPMd (7-Zip, variant H; order and memory swept, the strongest kept — 7-Zip caps PPMd memory to
16× a known input size, so the input is piped through stdin to keep the memory asked for),
xz -9e (container, and raw LZMA2 without the .xz framing, as ``xz --format=raw --lzma2=preset=9e``),
brotli quality 11 / lgwin 24, zstd -22 --ultra with and without a dictionary trained on the
training text, bzip2 -9 and zlib level 9 for reference. xz/zstd/bzip2/zlib/brotli run in process
(liblzma, libzstd, libbz2, zlib, brotli: byte-identical to the CLIs of the same library version).

Usage (from the repository root; ``--val``/``--train`` default to ../shared/data/enwiki)::

    python bench/compressors.py
    python bench/compressors.py --val other.jsonl --train 'other_train_*.jsonl' --json out.json
    python bench/compressors.py --ppmd-orders 8 --ppmd-mem 256 --dict-sizes 112640   # quick
"""

from __future__ import annotations

import argparse
import bz2
import glob
import json
import lzma
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import brotli
import zstandard

from pgolf.errors import DataError, PgolfError

SEPARATOR = b"\n"
_SHARED_ENWIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "enwiki"
DEFAULT_VAL = _SHARED_ENWIKI / "val.jsonl"
DEFAULT_TRAIN = str(_SHARED_ENWIKI / "train_*.jsonl")
DEFAULT_PPMD_ORDERS = (4, 6, 8, 10, 12, 16, 24, 32)
DEFAULT_PPMD_MEM_MB = (64, 256, 1024)
DEFAULT_DICT_SIZES = (112_640, 1_048_576)  # zstd's default 110 KiB, and 1 MiB
DICT_SAMPLE_BYTES = 4096


@dataclass(frozen=True)
class Result:
    name: str
    command: str
    """The equivalent command line."""
    compressed_bytes: int
    """Payload: what the decoder reads besides its own code."""
    side_bytes: int
    """Side information charged like model bytes (the zstd dictionary); 0 otherwise."""
    raw_bytes: int
    compress_seconds: float
    decompress_seconds: float
    note: str = ""

    @property
    def bpb(self) -> float:
        return bits_per_byte(self.compressed_bytes, self.raw_bytes)

    @property
    def bpb_total(self) -> float:
        return bits_per_byte(self.compressed_bytes + self.side_bytes, self.raw_bytes)

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"bpb": self.bpb, "bpb_total": self.bpb_total}


def bits_per_byte(compressed_bytes: int, raw_bytes: int) -> float:
    """8 · compressed / raw."""
    if raw_bytes <= 0:
        raise ValueError("raw_bytes must be positive")
    return 8.0 * compressed_bytes / raw_bytes


def load_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """The ``field`` of every non-blank line of a JSON-lines file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise DataError(f"{path}:{lineno}: no string field {field!r}")
            texts.append(obj[field])
    if not texts:
        raise DataError(f"{path}: no documents")
    return texts


def build_stream(texts: Sequence[str], separator: bytes = SEPARATOR) -> tuple[bytes, int]:
    """(documents' UTF-8 joined by ``separator``, Σ len(utf8(doc))) — the stream and the bpb denominator."""
    encoded = [t.encode("utf-8") for t in texts]
    return separator.join(encoded), sum(len(e) for e in encoded)


# --- in-process codecs --------------------------------------------------------------------------

Codec = tuple[str, str, Callable[[bytes], bytes], Callable[[bytes], bytes]]
"""(name, equivalent command, compress, decompress)."""

_XZ_RAW_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def standard_codecs() -> list[Codec]:
    return [
        (
            "xz -9e (.xz container)",
            "xz -9e",
            lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME),
            lambda c: lzma.decompress(c, format=lzma.FORMAT_XZ),
        ),
        (
            "xz -9e (raw LZMA2)",
            "xz --format=raw --lzma2=preset=9e",
            lambda d: lzma.compress(d, format=lzma.FORMAT_RAW, filters=_XZ_RAW_FILTERS),
            lambda c: lzma.decompress(c, format=lzma.FORMAT_RAW, filters=_XZ_RAW_FILTERS),
        ),
        (
            "brotli -q 11 -w 24",
            "brotli.compress(quality=11, lgwin=24)",
            lambda d: brotli.compress(d, quality=11, lgwin=24),
            brotli.decompress,
        ),
        (
            "zstd -22 --ultra",
            "zstd -22 --ultra",
            lambda d: zstandard.ZstdCompressor(level=22).compress(d),
            lambda c: zstandard.ZstdDecompressor().decompress(c),
        ),
        ("bzip2 -9", "bzip2 -9", lambda d: bz2.compress(d, 9), bz2.decompress),
        ("zlib -9", "zlib.compress(level=9)", lambda d: zlib.compress(d, 9), zlib.decompress),
    ]


def run_codec(
    data: bytes,
    raw_bytes: int,
    name: str,
    command: str,
    compress: Callable[[bytes], bytes],
    decompress: Callable[[bytes], bytes],
    side_bytes: int = 0,
    note: str = "",
) -> Result:
    """Compress, time, decompress and check the round trip."""
    t0 = time.perf_counter()
    payload = compress(data)
    t1 = time.perf_counter()
    back = decompress(payload)
    t2 = time.perf_counter()
    if back != data:
        raise RuntimeError(f"{name}: round trip does not reproduce the input")
    return Result(name, command, len(payload), side_bytes, raw_bytes, t1 - t0, t2 - t1, note)


# --- zstd with a trained dictionary --------------------------------------------------------------


def dictionary_samples(texts: Iterable[str], sample_bytes: int = DICT_SAMPLE_BYTES) -> list[bytes]:
    """Each document's UTF-8 cut into ``sample_bytes`` pieces (zstd dictionaries learn from many
    small samples; a piece never spans two documents)."""
    out: list[bytes] = []
    for t in texts:
        b = t.encode("utf-8")
        out.extend(b[i : i + sample_bytes] for i in range(0, len(b), sample_bytes))
    return out


def train_zstd_dictionary(samples: list[bytes], dict_size: int) -> bytes:
    """zstd's default dictionary trainer (fastCOVER, as ``zstd --train --maxdict=dict_size``)."""
    return zstandard.train_dictionary(dict_size, samples).as_bytes()


def zstd_dict_codec(dictionary: bytes, level: int = 22) -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    d = zstandard.ZstdCompressionDict(dictionary)
    return (
        lambda data: zstandard.ZstdCompressor(level=level, dict_data=d).compress(data),
        lambda comp: zstandard.ZstdDecompressor(dict_data=d).decompress(comp),
    )


# --- PPMd through 7-Zip --------------------------------------------------------------------------


@dataclass(frozen=True)
class PpmdRun:
    order: int
    mem_mb: int
    archive_bytes: int
    """The whole .7z file (headers, file name, CRC included)."""
    packed_bytes: int
    """The PPMd stream alone ("Packed Size"; the decoder also needs order + memory, 5 bytes)."""
    method: str
    """As 7-Zip records it, e.g. ``PPMD:o8:mem28`` (mem = log2 bytes actually used)."""
    seconds: float


def find_7z() -> str | None:
    for exe in ("7z", "7zz", "7za"):
        path = shutil.which(exe)
        if path:
            return path
    return None


def _7z_listing(exe: str, archive: Path) -> tuple[int, str]:
    out = subprocess.run([exe, "l", "-slt", str(archive)], capture_output=True, text=True, check=True).stdout
    packed = re.findall(r"^Packed Size = (\d+)", out, re.M)
    method = re.findall(r"^Method = (PPMD\S*)", out, re.M)
    if not packed or not method:
        raise RuntimeError(f"7z: cannot read the listing of {archive}")
    return int(packed[-1]), method[-1]


def ppmd_compress(exe: str, data: bytes, order: int, mem_mb: int, workdir: Path) -> tuple[PpmdRun, Path]:
    """``7z a -t7z -m0=PPMd:o=ORDER:mem=MEMm`` with the data piped in (size unknown to 7-Zip, so
    it keeps the memory asked for instead of capping it at 16× the input size)."""
    archive = workdir / f"ppmd_o{order}_m{mem_mb}.7z"
    archive.unlink(missing_ok=True)
    cmd = [exe, "a", "-t7z", f"-m0=PPMd:o={order}:mem={mem_mb}m", "-bd", "-bso0", "-bsp0", "-sival.txt", str(archive)]
    t0 = time.perf_counter()
    subprocess.run(cmd, input=data, check=True, capture_output=True)
    sec = time.perf_counter() - t0
    packed, method = _7z_listing(exe, archive)
    return PpmdRun(order, mem_mb, archive.stat().st_size, packed, method, sec), archive


def ppmd_decompress(exe: str, archive: Path) -> bytes:
    return subprocess.run([exe, "x", "-so", str(archive)], check=True, capture_output=True).stdout


def ppmd_sweep(
    exe: str, data: bytes, raw_bytes: int, orders: Sequence[int], mems_mb: Sequence[int]
) -> tuple[list[PpmdRun], list[Result]]:
    """Every (order, memory); the smallest archive is decompressed, checked and reported twice:
    as the .7z file and as the bare PPMd stream."""
    with tempfile.TemporaryDirectory(prefix="pgolf_ppmd_") as tmp:
        work = Path(tmp)
        runs: list[PpmdRun] = []
        best: tuple[PpmdRun, Path] | None = None
        for order in orders:
            for mem in mems_mb:
                run, archive = ppmd_compress(exe, data, order, mem, work)
                runs.append(run)
                if best is None or run.archive_bytes < best[0].archive_bytes:
                    if best is not None:
                        best[1].unlink()
                    best = (run, archive)
                else:
                    archive.unlink()
        if best is None:
            return runs, []
        run, archive = best
        t0 = time.perf_counter()
        back = ppmd_decompress(exe, archive)
        dsec = time.perf_counter() - t0
    if back != data:
        raise RuntimeError("7z PPMd: round trip does not reproduce the input")
    cmd = f"7z a -t7z -m0=PPMd:o={run.order}:mem={run.mem_mb}m (stdin)"
    note = f"best of {len(runs)} (order, mem); 7-Zip records {run.method}"
    return runs, [
        Result("PPMd (7z archive)", cmd, run.archive_bytes, 0, raw_bytes, run.seconds, dsec, note),
        Result(
            "PPMd (bare stream)", cmd, run.packed_bytes, 0, raw_bytes, run.seconds, dsec,
            "7z 'Packed Size': the archive minus its headers",
        ),
    ]


# --- driver --------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    v = {
        "python": platform.python_version(),
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "python-zstandard": zstandard.__version__,
        "brotli": getattr(brotli, "__version__", "?"),
    }
    exe = find_7z()
    if exe:
        head = subprocess.run([exe], capture_output=True, text=True).stdout.strip().splitlines()
        v["7z"] = head[0] if head else exe
    return v


def run_all(
    val_path: str | os.PathLike[str],
    train_glob: str | None = DEFAULT_TRAIN,
    *,
    ppmd_orders: Sequence[int] = DEFAULT_PPMD_ORDERS,
    ppmd_mems_mb: Sequence[int] = DEFAULT_PPMD_MEM_MB,
    dict_sizes: Sequence[int] = DEFAULT_DICT_SIZES,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    texts = load_texts(val_path)
    data, raw = build_stream(texts)
    log(f"# {val_path}: {len(texts)} documents, {raw:,} raw bytes (+{len(texts) - 1} separators = {len(data):,})")
    results: list[Result] = []
    notes: list[str] = []
    for name, cmd, comp, decomp in standard_codecs():
        results.append(run_codec(data, raw, name, cmd, comp, decomp))
        log(f"  {name}: {results[-1].compressed_bytes:,} B, {results[-1].bpb:.4f} bpb")

    train_files = sorted(glob.glob(train_glob)) if train_glob else []
    if dict_sizes and train_files:
        t0 = time.perf_counter()
        samples = dictionary_samples(t for f in train_files for t in load_texts(f))
        load_sec = time.perf_counter() - t0
        n_train = sum(len(s) for s in samples)
        for size in dict_sizes:
            t0 = time.perf_counter()
            dictionary = train_zstd_dictionary(samples, size)
            train_sec = time.perf_counter() - t0
            comp, decomp = zstd_dict_codec(dictionary)
            note = (
                f"dictionary {len(dictionary):,} B trained in {train_sec:.1f} s (+{load_sec:.1f} s loading) "
                f"on {len(train_files)} files, {n_train:,} B in {len(samples):,} samples of ≤{DICT_SAMPLE_BYTES} B"
            )
            results.append(
                run_codec(
                    data, raw, f"zstd -22 --ultra, {size // 1024} KiB dict",
                    f"zstd --train --maxdict={size}; zstd -22 --ultra -D dict", comp, decomp, len(dictionary), note,
                )
            )
            log(f"  {results[-1].name}: {results[-1].compressed_bytes:,} B, {results[-1].bpb:.4f} bpb")
    elif dict_sizes:
        notes.append(f"zstd dictionary skipped: no training files match {train_glob!r}")

    ppmd_runs: list[PpmdRun] = []
    exe = find_7z()
    if exe is None:
        notes.append("PPMd skipped: no 7z/7zz/7za on PATH (apt-get install p7zip-full)")
    elif ppmd_orders and ppmd_mems_mb:
        ppmd_runs, ppmd_results = ppmd_sweep(exe, data, raw, ppmd_orders, ppmd_mems_mb)
        results[:0] = ppmd_results
        log(f"  PPMd: best {ppmd_results[0].compressed_bytes:,} B, {ppmd_results[0].bpb:.4f} bpb")

    return {
        "val": str(val_path),
        "documents": len(texts),
        "raw_bytes": raw,
        "stream_bytes": len(data),
        "separator": SEPARATOR.decode(),
        "results": [r.to_dict() for r in results],
        "ppmd_sweep": [asdict(r) | {"bpb_archive": bits_per_byte(r.archive_bytes, raw)} for r in ppmd_runs],
        "notes": notes,
    }


def format_table(results: Sequence[dict[str, object]]) -> str:
    lines = [
        "| compressor | compressed bytes | side bytes | bpb | bpb incl. side | compress s | decompress s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: r["bpb_total"]):  # type: ignore[arg-type, return-value]
        lines.append(
            f"| {r['name']} | {r['compressed_bytes']:,} | {r['side_bytes']:,} | {r['bpb']:.4f} | "
            f"{r['bpb_total']:.4f} | {r['compress_seconds']:.2f} | {r['decompress_seconds']:.2f} |"
        )
    return "\n".join(lines)


def format_sweep(runs: Sequence[dict[str, object]]) -> str:
    lines = ["| order | mem MiB | 7-Zip method | archive bytes | bpb | seconds |", "|---:|---:|---|---:|---:|---:|"]
    for r in runs:
        lines.append(
            f"| {r['order']} | {r['mem_mb']} | {r['method']} | {r['archive_bytes']:,} | "
            f"{r['bpb_archive']:.4f} | {r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--val", default=str(DEFAULT_VAL), help="JSON-lines file with a 'text' field per document")
    p.add_argument("--train", default=DEFAULT_TRAIN, help="glob of JSON-lines files to train the zstd dictionary on")
    p.add_argument("--ppmd-orders", default=",".join(map(str, DEFAULT_PPMD_ORDERS)))
    p.add_argument("--ppmd-mem", default=",".join(map(str, DEFAULT_PPMD_MEM_MB)), help="MiB, comma list")
    p.add_argument("--dict-sizes", default=",".join(map(str, DEFAULT_DICT_SIZES)), help="bytes, comma list; '' = none")
    p.add_argument("--json", metavar="PATH", help="also write results as JSON ('-' = stdout)")
    args = p.parse_args(argv)
    try:
        t0 = time.perf_counter()
        out = run_all(
            args.val,
            args.train,
            ppmd_orders=_ints(args.ppmd_orders),
            ppmd_mems_mb=_ints(args.ppmd_mem),
            dict_sizes=_ints(args.dict_sizes),
            log=lambda s: print(s, file=sys.stderr),
        )
        out["versions"] = versions()
        out["total_seconds"] = time.perf_counter() - t0
        print(f"# {out['val']}: {out['documents']} documents, raw bytes {out['raw_bytes']:,}")
        print(format_table(out["results"]))  # type: ignore[arg-type]
        if out["ppmd_sweep"]:
            print("\nPPMd sweep (7z archive bytes):\n" + format_sweep(out["ppmd_sweep"]))  # type: ignore[arg-type]
        for n in out["notes"]:  # type: ignore[attr-defined]
            print(f"note: {n}")
        print(f"# total {out['total_seconds']:.1f} s")
        if args.json == "-":
            print(json.dumps(out, indent=2))
        elif args.json:
            from pgolf.fileio import write_json

            write_json(args.json, out)
    except PgolfError as e:
        print(f"pgolf: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
