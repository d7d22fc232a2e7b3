"""A training run of the bundled model packed into an archive folder, and unpacked again.

A run folder's `state.pt` (trainable weights, optimizer state, loss curve) is ~81 MB.
`pack_run` writes an archive folder that moves a run to another machine through any
channel, even one that limits the size of a file: `run-pack.json` (the run's config, each
file's size and SHA-256, its parts) with `state.pt` and `model.pt`, each cut into parts of
at most `part_size` bytes where it is larger (`state.pt.part00`, `state.pt.part01`, ...; a
file that fits keeps its name). `unpack_run` checks every part and rebuilds the run folder,
byte for byte, so that `--resume` continues it there (docs/demo-model.md, "Training on a
GPU"). The command line is `train/pack_run.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch

PACK_FORMAT = "sam2rl-fast-packed-run-v1"
MANIFEST = "run-pack.json"
FILES = ("state.pt", "model.pt")  # with config.json (in the manifest), what a run resumes from
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


class PackError(ValueError):
    """A packed run that is incomplete or corrupt, or a folder that would be overwritten."""


def parse_size(text: str) -> int:
    """Bytes of a size written as `split -b` takes it: `50M` = 50 MiB, `512K`, `1G`, `4000000`."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise PackError(f"part size {text!r}: give a positive number of bytes, e.g. 50M, 512K or 4000000")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_parts(src: Path, dest: Path, part_size: int | None) -> dict:
    """Copy file `src` into folder `dest`, in parts of at most `part_size` bytes where it is
    larger (else whole, under its own name): its size, SHA-256 and parts."""
    size = src.stat().st_size
    if part_size is None or size <= part_size:
        shutil.copyfile(src, dest / src.name)
        sha = _sha256(dest / src.name)
        return {"bytes": size, "sha256": sha, "parts": [{"name": src.name, "bytes": size, "sha256": sha}]}
    parts, whole = [], hashlib.sha256()
    with open(src, "rb") as f:  # one read: the parts and the whole file's hash
        for i, block in enumerate(iter(lambda: f.read(part_size), b"")):
            p = dest / f"{src.name}.part{i:02d}"
            p.write_bytes(block)
            parts.append({"name": p.name, "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()})
            whole.update(block)
    return {"bytes": size, "sha256": whole.hexdigest(), "parts": parts}


def pack_run(run, dest, part_size: int | None = None) -> list[Path]:
    """Write run folder `run` into archive folder `dest` (new or empty): run-pack.json, and
    state.pt and model.pt in parts of at most `part_size` bytes (None: whole). Returns the
    files written."""
    run, dest = Path(run), Path(dest)
    for name in ("config.json", *FILES):
        if not (run / name).is_file():
            raise PackError(f"{run} is not a finished checkpoint of a run: {name} is missing")
    if dest.exists() and any(dest.iterdir()):
        raise PackError(f"{dest} is not empty: packing writes only into a new or empty folder")
    if part_size is not None and part_size <= 0:
        raise PackError(f"part size must be positive, got {part_size}")
    dest.mkdir(parents=True, exist_ok=True)
    files = {name: _write_parts(run / name, dest, part_size) for name in FILES}
    manifest = {"format": PACK_FORMAT, "config": json.loads((run / "config.json").read_text()),
                "files": files}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return [dest / MANIFEST, *(dest / p["name"] for f in files.values() for p in f["parts"])]


def unpack_run(src, run, log=print) -> Path:
    """Rebuild run folder `run` (new or empty) from archive folder `src` that `pack_run`
    wrote: config.json, state.pt and model.pt, every byte checked against run-pack.json;
    curve.csv and loss.png are drawn again from the curve in state.pt."""
    from .run import plot_curve, write_curve

    src, run = Path(src), Path(run)
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise PackError(f"{src / MANIFEST}: not a packed run ({e})") from e
    if manifest.get("format") != PACK_FORMAT or set(manifest.get("files", ())) != set(FILES):
        raise PackError(f"{src / MANIFEST} is not a packed run of this trainer")
    if run.exists() and any(run.iterdir()):
        raise PackError(f"{run} is not empty: unpacking writes only into a new or empty folder")
    for entry in manifest["files"].values():
        for part in entry["parts"]:
            p = src / part["name"]
            if not p.is_file() or p.stat().st_size != part["bytes"] or _sha256(p) != part["sha256"]:
                raise PackError(f"{p} is missing or corrupt (its size or SHA-256 differs from {MANIFEST})")
    run.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest["files"].items():  # each file whole or absent
        tmp = run / f".{name}.tmp{os.getpid()}"
        try:
            with open(tmp, "wb") as out:
                for part in entry["parts"]:
                    out.write((src / part["name"]).read_bytes())
            if _sha256(tmp) != entry["sha256"]:  # parts in the wrong order, say
                raise PackError(f"the parts in {src} do not join into the packed {name}")
            os.replace(tmp, run / name)
        finally:
            tmp.unlink(missing_ok=True)
    (run / "config.json").write_text(json.dumps(manifest["config"], indent=1))
    curve = torch.load(run / "state.pt", map_location="cpu", weights_only=False)["curve"]
    write_curve(curve, run)
    plot_curve(curve, run / "loss.png", log=log)
    return run
