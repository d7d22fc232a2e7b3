"""Reading an exported tracker folder (`sam2rl-fast export-tracker`) with numpy and
onnxruntime only.

This module imports nothing but the standard library, numpy and onnxruntime (no torch,
no other sam2rl_fast module), so it can be copied into an application or loaded on its
own. `load_tracker_folder(DIR)` checks the folder before opening anything: the manifest's
format and version, then every file it names against its SHA-256, so that networks and
tensors of different exports (or models) are never mixed.

The folder (names fixed by the manifest):

    manifest.json          what the folder is: format, version, model, files + sha256
    image_encoder.onnx     frame -> vision features, position encoding, high-res features
    memory_attention.onnx  current features + memories -> memory-conditioned features
    sam_heads.onnx         features + prompts -> masks, IoUs, object score, object pointer
    memory_encoder.onnx    features + chosen mask -> memory features + position encoding
    tensors.npz            the small learned tensors the memory bank and tracker read
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "sam2rl-fast-tracker-onnx"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TENSORS_NAME = "tensors.npz"
NETWORKS = ("image_encoder", "memory_attention", "sam_heads", "memory_encoder")


class TrackerFolderError(ValueError):
    """A tracker folder that cannot be used: missing, foreign, altered or mixed files."""


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder) -> dict:
    """The folder's manifest, its format and version checked (no file is hashed)."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise TrackerFolderError(f"tracker folder not found: {folder}")
    if not path.is_file():
        raise TrackerFolderError(f"{folder} has no {MANIFEST_NAME}: not an exported tracker folder "
                                 "(sam2rl-fast export-tracker writes one)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TrackerFolderError(f"{path} is not readable JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise TrackerFolderError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                                 f"expected {FORMAT!r}: not an exported tracker folder")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise TrackerFolderError(f"{path}: format version {version!r}, this reader reads version "
                                 f"{FORMAT_VERSION}; export the tracker again with this sam2rl-fast")
    files = manifest.get("files")
    need = {*NETWORKS, "tensors"}
    if not isinstance(files, dict) or not need <= set(files):
        raise TrackerFolderError(f"{path}: the manifest's files must name {sorted(need)}")
    return manifest


def check_files(folder, manifest: dict) -> None:
    """Refuse a folder whose files are missing, altered or not the manifest's (sha256)."""
    folder = Path(folder).expanduser()
    for role, entry in manifest["files"].items():
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            raise TrackerFolderError(f"{folder / MANIFEST_NAME}: bad file entry for {role}: {entry!r}")
        path = folder / name
        if not path.is_file():
            raise TrackerFolderError(f"{path} is missing ({role}); the folder is incomplete: "
                                     "export the tracker again")
        if sha256_of(path) != entry.get("sha256"):
            raise TrackerFolderError(f"{path} does not belong to this folder: its SHA-256 differs from "
                                     f"the manifest's ({role}); it was altered or comes from another "
                                     "export. Export the tracker again rather than mixing files")


def load_tensors(path) -> dict[str, np.ndarray]:
    """The arrays of tensors.npz (plain arrays: no pickled objects are read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise TrackerFolderError(f"{path} is not a readable .npz of arrays: {e}") from None


def _providers(providers):
    import onnxruntime as ort

    if providers:
        return list(providers)
    available = ort.get_available_providers()
    # onnxruntime-gpu lists CUDA even without a usable GPU; it then falls back to the CPU
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass
class TrackerFolder:
    """An exported tracker: its manifest, one onnxruntime session per network, the tensors."""

    path: Path
    manifest: dict
    sessions: dict  # name (NETWORKS) -> onnxruntime.InferenceSession
    tensors: dict[str, np.ndarray]
    providers: dict[str, str] = field(default_factory=dict)  # name -> provider it runs on

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    def run(self, name: str, feed: dict) -> dict[str, np.ndarray]:
        """Outputs of network `name` by output name."""
        sess = self.sessions[name]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feed)))


def load_tracker_folder(folder, providers: list[str] | None = None,
                        threads: int | None = None) -> TrackerFolder:
    """Check and open an exported tracker folder.

    Raises TrackerFolderError naming the file for a folder that is not one, another format
    version, a missing file or one whose SHA-256 is not the manifest's. `providers` are
    onnxruntime's (default: CUDA when onnxruntime lists it, then the CPU); `threads` sets
    each session's intra-op threads.
    """
    import onnxruntime as ort

    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    check_files(folder, manifest)
    tensors = load_tensors(folder / manifest["files"]["tensors"]["name"])
    missing = [k for k in manifest.get("tensors", {}) if k not in tensors]
    if missing:
        raise TrackerFolderError(f"{folder / TENSORS_NAME} lacks {missing} named by the manifest")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    sessions, where = {}, {}
    for name in NETWORKS:
        path = folder / manifest["files"][name]["name"]
        try:
            sess = ort.InferenceSession(str(path), opts, providers=_providers(providers))
        except Exception as e:  # onnxruntime raises its own types
            raise TrackerFolderError(f"onnxruntime cannot load {path} ({name}): {e}") from e
        sessions[name], where[name] = sess, sess.get_providers()[0]
    return TrackerFolder(folder, manifest, sessions, tensors, where)
