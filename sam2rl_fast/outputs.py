"""Output folders that never lose what a user put there.

Every command that writes a folder (`track`, `eval`, `demo`, `train`) goes through here:

- `--out` may not be, or contain, an input (a video file or frame folder, a model or agent
  file), the working folder, the home folder or the filesystem root;
- an existing non-empty folder is used only with `--overwrite`, and then loses only the
  files that sam2rl-fast wrote there before: each folder keeps a manifest
  (`.sam2rl-fast-outputs.json`) of the files the tool wrote; everything else stays;
- `staged_output` writes into a fresh staging folder beside `--out` and moves the files in
  only when the command succeeds, so a failure (bad input found late, an unbuilt
  extension, Ctrl-C) leaves `--out` as it was and no half-written results.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

MANIFEST = ".sam2rl-fast-outputs.json"


class OutputDirError(ValueError):
    """An output folder that cannot be used without risking the user's files."""


def _resolved(p) -> Path:
    return Path(p).expanduser().resolve()


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_path(out, inputs=(), option: str = "--out") -> Path:
    """`out`, resolved; refuses a folder whose replacement could delete user data."""
    path = _resolved(out)
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if path == Path(path.anchor):
        raise OutputDirError(f"{option} {out}: the filesystem root cannot be an output folder")
    if _is_within(cwd, path):
        raise OutputDirError(f"{option} {out} is the working folder or holds it; choose a new "
                             "folder for the outputs (e.g. --out runs/name)")
    if path == home:
        raise OutputDirError(f"{option} {out} is the home folder; choose a new folder")
    for src in inputs:
        if src is None or not isinstance(src, (str, os.PathLike)):
            continue
        s = Path(src).expanduser()
        if not s.exists():
            continue
        s = s.resolve()
        if _is_within(s, path):
            raise OutputDirError(f"{option} {out} is or holds the input {src}; choose a folder "
                                 "outside the inputs")
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {out} is a file, not a folder")
    return path


def read_manifest(folder: Path) -> list[str]:
    """Files (relative paths) that sam2rl-fast wrote into `folder` before."""
    m = Path(folder) / MANIFEST
    if not m.is_file():
        return []
    try:
        files = json.loads(m.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and ".." not in Path(f).parts
            and not Path(f).is_absolute()]


def _user_files(folder: Path, ours: set[str]) -> list[str]:
    out = []
    for p in folder.rglob("*"):
        if p.is_file() or p.is_symlink():
            rel = p.relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in ours:
                out.append(rel)
    return sorted(out)


def user_files(folder) -> set[str]:
    """Files (relative paths) in `folder` that sam2rl-fast did not write there."""
    folder = Path(folder)
    return set(_user_files(folder, set(read_manifest(folder)))) if folder.is_dir() else set()


def remove_own_files(folder: Path, log=None) -> list[str]:
    """Delete the files sam2rl-fast wrote into `folder` (its manifest), then the folders
    that became empty; return the user's files that were kept."""
    folder = Path(folder)
    ours = read_manifest(folder)
    for rel in ours:
        p = folder / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
    for rel in sorted({Path(r).parent for r in ours}, key=lambda d: -len(d.parts)):
        d = folder / rel
        while d != folder and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    (folder / MANIFEST).unlink(missing_ok=True)
    kept = _user_files(folder, set())
    if kept and log:
        log(f"note: kept {len(kept)} file(s) in {folder} that sam2rl-fast did not write")
    return kept


def write_manifest(folder: Path, files, command: str):
    folder = Path(folder)
    old = set(read_manifest(folder))
    data = {"tool": "sam2rl-fast", "command": command, "files": sorted(old | set(files))}
    tmp = folder / f".{MANIFEST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, folder / MANIFEST)


def prepare_out_dir(out, overwrite: bool, inputs=(), command: str = "",
                    option: str = "--out", log=print) -> Path:
    """A folder to write into directly (training runs): new, empty, or with --overwrite a
    folder whose earlier sam2rl-fast outputs are removed (the user's files are kept)."""
    path = check_out_path(out, inputs, option)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise OutputDirError(f"{option} {out} already exists and is not empty; pass "
                                 "--overwrite to replace what sam2rl-fast wrote there, or "
                                 "choose a new folder")
        remove_own_files(path, log)
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_outputs(folder, command: str, before: set[str] | None = None):
    """Add every file under `folder` that was not in `before` to its manifest."""
    folder = Path(folder)
    files = [f for f in _user_files(folder, set()) if before is None or f not in before]
    write_manifest(folder, files, command)


@contextmanager
def staged_output(out, overwrite: bool, inputs=(), command: str = "", option: str = "--out",
                  log=print):
    """Yield a staging folder; on success move its files into `out` (checked as
    `prepare_out_dir` checks it) and record them. On failure `out` is left as it was."""
    path = check_out_path(out, inputs, option)
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise OutputDirError(f"{option} {out} already exists and is not empty; pass "
                             "--overwrite to replace what sam2rl-fast wrote there, or choose "
                             "a new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = path.parent / f".{path.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)  # our own leftover of this pid
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    new = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    if path.exists() and overwrite:
        remove_own_files(path, log)
    clash = [f for f in new if (path / f).exists()]
    if clash:
        raise OutputDirError(f"{option} {out}: {clash[0]} (and {len(clash) - 1} more) exist "
                             "and were not written by sam2rl-fast; the results are kept in "
                             f"{stage}")
    path.mkdir(parents=True, exist_ok=True)
    for f in new:
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / f, path / f)
    shutil.rmtree(stage, ignore_errors=True)
    write_manifest(path, new, command)


def check_out_file(out, inputs=(), option: str = "--output") -> Path:
    """An output file that is not one of the inputs (replacing it would lose the input)."""
    path = _resolved(out)
    for src in inputs:
        if src is not None and isinstance(src, (str, os.PathLike)) and Path(src).expanduser().exists() \
                and Path(src).expanduser().resolve() == path:
            raise OutputDirError(f"{option} {out} is the input {src}; write to another file")
    if path.is_dir():
        raise OutputDirError(f"{option} {out} is a folder; give a file name")
    return path
