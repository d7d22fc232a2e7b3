"""A training run packed into a few files of bounded size, and unpacked again.

The device machines this project is lent (docs/demo-model.md, "Training on a GPU") return
at most 8 files of 16 MiB each, and a run's `state.pt` (weights, optimizer state, curve) is
~81 MB. `pack_run` writes `carry.json` (the run's config, the parts' sizes and SHA-256),
`model.pt` and `state.pt` cut into parts; `unpack_run` checks every part and rebuilds the
run folder, byte for byte, so that `--resume` continues it here or on the next machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

CARRY_FORMAT = "sam2rl-fast-carried-run-v1"
FILE_LIMIT = 16 * 2**20  # the device tool returns files of at most 16 MiB
PART_BYTES = 16_700_000  # state.pt parts, under that limit: ~81 MB in 5 parts


class CarryError(ValueError):
    """A packed run that is incomplete or corrupt, or a folder that would be overwritten."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pack_run(run, dest, part_bytes: int = PART_BYTES) -> list[Path]:
    """Write run folder `run` into `dest` (new or empty) as carry.json, model.pt (at most
    16 MiB) and state.pt.partNN files of at most `part_bytes`. Returns the files written."""
    run, dest = Path(run), Path(dest)
    for name in ("config.json", "state.pt", "model.pt"):
        if not (run / name).is_file():
            raise CarryError(f"{run} is not a finished checkpoint of a run: {name} is missing")
    if dest.exists() and any(dest.iterdir()):
        raise CarryError(f"{dest} is not empty: packing writes only into a new or empty folder")
    if (run / "model.pt").stat().st_size > FILE_LIMIT:
        raise CarryError(f"{run / 'model.pt'} is larger than the {FILE_LIMIT} bytes a file may be")
    dest.mkdir(parents=True, exist_ok=True)
    written, parts, whole, size = [], [], hashlib.sha256(), 0
    with open(run / "state.pt", "rb") as f:  # one read: the parts and the whole file's hash
        for i, block in enumerate(iter(lambda: f.read(part_bytes), b"")):
            p = dest / f"state.pt.part{i:02d}"
            p.write_bytes(block)
            parts.append({"name": p.name, "bytes": len(block),
                          "sha256": hashlib.sha256(block).hexdigest()})
            whole.update(block)
            size += len(block)
            written.append(p)
    shutil.copyfile(run / "model.pt", dest / "model.pt")
    written.append(dest / "model.pt")
    manifest = {"format": CARRY_FORMAT, "config": json.loads((run / "config.json").read_text()),
                "state": {"bytes": size, "sha256": whole.hexdigest(), "parts": parts},
                "model": {"bytes": (dest / "model.pt").stat().st_size,
                          "sha256": _sha256(dest / "model.pt")}}
    (dest / "carry.json").write_text(json.dumps(manifest, indent=1))
    return [dest / "carry.json", *written]


def unpack_run(src, run, log=print) -> Path:
    """Rebuild run folder `run` (new or empty) from the files `pack_run` wrote in `src`:
    config.json, state.pt and model.pt, every byte checked against carry.json; curve.csv
    and loss.png are drawn again from the curve in state.pt."""
    from .run import plot_curve, write_curve

    src, run = Path(src), Path(run)
    try:
        manifest = json.loads((src / "carry.json").read_text())
    except (OSError, ValueError) as e:
        raise CarryError(f"{src / 'carry.json'}: not a packed run ({e})") from e
    if manifest.get("format") != CARRY_FORMAT:
        raise CarryError(f"{src / 'carry.json'} is not a packed run of this trainer")
    if run.exists() and any(run.iterdir()):
        raise CarryError(f"{run} is not empty: unpacking writes only into a new or empty folder")
    for part in manifest["state"]["parts"]:
        p = src / part["name"]
        if not p.is_file() or p.stat().st_size != part["bytes"] or _sha256(p) != part["sha256"]:
            raise CarryError(f"{p} is missing or corrupt (its size or SHA-256 differs from carry.json)")
    if _sha256(src / "model.pt") != manifest["model"]["sha256"]:
        raise CarryError(f"{src / 'model.pt'} is corrupt (its SHA-256 differs from carry.json)")
    run.mkdir(parents=True, exist_ok=True)
    tmp = run / f".state.pt.tmp{os.getpid()}"
    with open(tmp, "wb") as out:
        for part in manifest["state"]["parts"]:
            out.write((src / part["name"]).read_bytes())
    if _sha256(tmp) != manifest["state"]["sha256"]:  # parts in the wrong order, say
        tmp.unlink()
        raise CarryError(f"the parts in {src} do not join into the packed state.pt")
    os.replace(tmp, run / "state.pt")
    shutil.copyfile(src / "model.pt", run / "model.pt")
    (run / "config.json").write_text(json.dumps(manifest["config"], indent=1))
    curve = torch.load(run / "state.pt", map_location="cpu", weights_only=False)["curve"]
    write_curve(curve, run)
    plot_curve(curve, run / "loss.png", log=log)
    return run
