"""Output folders that never lose what a user put there.

Every command that writes a folder (`track`, `eval`, `demo`, `train`) goes through here:

- `--out` may not be, or contain, an input (a video file or frame folder, a model or agent
  file), nor lie inside an input folder (a dataset, a frame folder), nor be the working
  folder, the home folder or the filesystem root; a folder that cannot be created or
  written is refused before any work, naming `--out`;
- an existing non-empty folder is used only with `--overwrite`, and then loses only the
  files that sam2rl-fast wrote there before: each folder keeps a manifest
  (`.sam2rl-fast-outputs.json`) of the files the tool wrote; everything else stays.
  Symbolic links are never followed out of the folder and never removed: a link (to a
  file or a folder, inside or out) is the user's, and so is everything it points to;
- `staged_output` writes into a fresh staging folder beside `--out` and moves the files in
  only when the command succeeds, so a failure (bad input found late, an unbuilt
  extension, Ctrl-C) leaves `--out` as it was and no half-written results. Whether the
  results can be moved in (no user file, link or non-folder in their way) is checked
  before anything of the earlier results is removed;
- staging folders (`.NAME.partial-PID-*`) and temporary files of runs that were killed are
  removed by the next run on the same `--out`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

MANIFEST = ".sam2rl-fast-outputs.json"
# the longest suffix a staging folder adds to --out's name: ".NAME.partial-PID-XXXXXXXX"
_STAGE_EXTRA = len("..partial--") + 10 + 8


class OutputDirError(ValueError):
    """An output folder that cannot be used without risking the user's files."""


def _resolved(p) -> Path:
    return Path(p).expanduser().resolve()


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _writable_folder(path: Path, out, option: str) -> None:
    """Refuse, naming `option`, an output folder that could not be created or written:
    its parent a file, a read-only or special filesystem (/proc)."""
    anc = path.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise OutputDirError(f"{option} {out}: {anc} is a file, so no folder can be made under it")
    # the one sure test: make (and remove) a folder where the staging folder and the
    # outputs will go
    for where in [anc] + ([path] if path.is_dir() else []):
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".sam2rl-fast-probe-", dir=where))
        except OSError as e:
            why = e.strerror or type(e).__name__
            raise OutputDirError(f"{option} {out}: cannot write in {where} ({why})") from None


def check_out_path(out, inputs=(), option: str = "--out") -> Path:
    """`out`, resolved; refuses a folder whose replacement could delete user data, or that
    cannot be written."""
    path = _resolved(out)
    for part in path.parts[1:]:
        if len(os.fsencode(part)) + (_STAGE_EXTRA if part == path.name else 0) > 255:
            raise OutputDirError(f"{option} {out}: the name {part[:24]}... is too long "
                                 f"({len(os.fsencode(part))} bytes; a folder name can have at most "
                                 f"{255 - _STAGE_EXTRA} here)")
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
        if s.is_dir() and _is_within(path, s):
            raise OutputDirError(f"{option} {out} is inside the input folder {src}; choose a "
                                 "folder outside the inputs (outputs there would be read as "
                                 "input next time)")
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {out} is a file, not a folder")
    _writable_folder(path, out, option)
    return path


def read_manifest(folder: Path) -> list[str]:
    """Files (relative paths) that sam2rl-fast wrote into `folder` before."""
    m = Path(folder) / MANIFEST
    if not m.is_file() or m.is_symlink():
        return []
    try:
        files = json.loads(m.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str) and f and ".." not in Path(f).parts
            and not Path(f).is_absolute()]


def _entries(folder: Path) -> list[str]:
    """Every file and every symbolic link under `folder` (relative paths); links to folders
    are listed, not entered."""
    out = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        r = Path(root)
        for d in dirs:
            if (r / d).is_symlink():
                out.append((r / d).relative_to(folder).as_posix())
        out += [(r / f).relative_to(folder).as_posix() for f in files]
    return sorted(out)


def _user_files(folder: Path, ours: set[str]) -> list[str]:
    return [rel for rel in _entries(folder) if rel != MANIFEST and rel not in ours]


def user_files(folder) -> set[str]:
    """Files (relative paths) in `folder` that sam2rl-fast did not write there."""
    folder = Path(folder)
    return set(_user_files(folder, set(read_manifest(folder)))) if folder.is_dir() else set()


def _real_dirs(folder: Path, rel: str) -> bool:
    """Whether every folder from `folder` down to `rel`'s parent is a real folder (no link)."""
    p = folder
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink() or not p.is_dir():
            return False
    return True


def _own_files(folder: Path) -> list[str]:
    """The manifest's files that are still the tool's: regular files reached without
    passing through a link (a link, or a file behind one, is the user's)."""
    return [rel for rel in read_manifest(folder) if _real_dirs(folder, rel)
            and not (folder / rel).is_symlink() and (folder / rel).is_file()]


def remove_own_files(folder: Path, log=None) -> list[str]:
    """Delete the files sam2rl-fast wrote into `folder` (its manifest), then the folders
    that became empty; return the user's files that were kept. Links are never followed
    nor removed."""
    folder = Path(folder)
    ours = _own_files(folder)
    for rel in ours:
        (folder / rel).unlink()
    for rel in sorted({Path(r).parent for r in ours}, key=lambda d: -len(d.parts)):
        d = folder / rel
        while d != folder and not d.is_symlink() and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    m = folder / MANIFEST
    if m.is_file() or m.is_symlink():
        m.unlink()
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def clean_stale(path: Path, log=None) -> list[Path]:
    """Remove what killed runs left for `path`: staging folders `.NAME.partial-PID` beside
    it and manifest temporaries in it, whose process is gone; returns what was removed."""
    removed = []
    stage = re.compile(re.escape(f".{path.name}.partial-") + r"(\d+)(-[A-Za-z0-9_]+)?$")
    tmp = re.compile(re.escape(f".{MANIFEST}.tmp") + r"(\d+)$")
    spots = [(path.parent, stage)] + ([(path, tmp)] if path.is_dir() and not path.is_symlink() else [])
    for where, pat in spots:
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            m = pat.match(name)
            p = where / name
            if not m or _pid_alive(int(m.group(1))):
                continue
            if p.is_symlink() or p.is_file():
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    if removed and log:
        log(f"note: removed {len(removed)} leftover(s) of an interrupted run: "
            f"{', '.join(p.name for p in removed[:3])}")
    return removed


def _not_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def prepare_out_dir(out, overwrite: bool, inputs=(), command: str = "",
                    option: str = "--out", log=print) -> Path:
    """A folder to write into directly (`--resume`, reports): new, empty, or with --overwrite
    a folder whose earlier sam2rl-fast outputs are removed (the user's files are kept)."""
    path = check_out_path(out, inputs, option)
    if _not_empty(path):
        if not overwrite:
            raise OutputDirError(f"{option} {out} already exists and is not empty; pass "
                                 "--overwrite to replace what sam2rl-fast wrote there, or "
                                 "choose a new folder")
        remove_own_files(path, log)
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_outputs(folder, command: str, before: set[str] | None = None):
    """Add every file under `folder` that was not in `before` to its manifest (links are
    never the tool's)."""
    folder = Path(folder)
    files = [f for f in _user_files(folder, set()) if (before is None or f not in before)
             and _real_dirs(folder, f) and not (folder / f).is_symlink()]
    write_manifest(folder, files, command)


def _blocked(path: Path, new: list[str], ours: set[str]) -> tuple[list[str], list[str]]:
    """(the new files whose place holds something that is not the tool's, or lies behind a
    link or a file; those whose place holds a file the tool wrote)."""
    user, own = [], []
    for f in new:
        p = path
        parts = Path(f).parts
        bad = False
        for i, part in enumerate(parts[:-1]):
            p = p / part
            if p.is_symlink():
                bad = True
                break
            if p.exists() and not p.is_dir():
                bad = "/".join(parts[: i + 1]) not in ours
                break
        dest = path / f
        if bad or dest.is_symlink() or (dest.exists() and f not in ours):
            user.append(f)
        elif dest.exists():
            own.append(f)
    return user, own


def _move_in(stage: Path, path: Path, new: list[str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for f in new:
        (path / f).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / f, path / f)


@contextmanager
def staged_output(out, overwrite: bool, inputs=(), command: str = "", option: str = "--out",
                  log=print):
    """Yield a staging folder; on success move its files into `out` (checked as
    `prepare_out_dir` checks it) and record them. On failure `out` is left as it was."""
    path = check_out_path(out, inputs, option)
    was_empty = not _not_empty(path)
    if not was_empty and not overwrite:
        raise OutputDirError(f"{option} {out} already exists and is not empty; pass "
                             "--overwrite to replace what sam2rl-fast wrote there, or choose "
                             "a new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path, log)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    new = [f for f in _entries(stage) if not (stage / f).is_symlink()]
    if was_empty and _not_empty(path) and not overwrite:
        kept = stage.with_name(stage.name.replace(".partial-", ".kept-"))
        os.replace(stage, kept)
        raise OutputDirError(f"{option} {out} was filled by another run while this one worked "
                             f"(it was empty when this one started); the results are kept in {kept}")
    ours = set(_own_files(path)) if overwrite else set()
    user, own = _blocked(path, new, ours)
    if user or (own and not overwrite):
        clash = user or own
        kept = stage.with_name(stage.name.replace(".partial-", ".kept-"))
        os.replace(stage, kept)
        what = ("exist and were not written by sam2rl-fast, or lie behind a link" if user
                else "were written there by another run")
        raise OutputDirError(f"{option} {out}: {clash[0]} (and {len(clash) - 1} more) {what}; "
                             f"nothing in {out} was changed; the results are kept in {kept}")
    if overwrite and path.exists():
        remove_own_files(path, log)
    _move_in(stage, path, new)
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


class StagedRun:
    """Where a new training run writes. Into --out itself when it is new or empty (nothing
    to lose; a killed run resumes from it); over an earlier run (--overwrite) into a staging
    folder (`staged_output`), moved in when it ends, so that a failed, interrupted or
    killed run leaves the earlier run as it was. A run that fails before its first
    checkpoint leaves nothing."""

    def __init__(self, out, overwrite: bool, inputs):
        path = check_out_path(out, inputs)
        self.out, self.path = Path(out), path
        self.fresh = not (path.is_dir() and any(path.iterdir()))
        self._cm = None
        if self.fresh:
            self.created = not path.exists()
            path.mkdir(parents=True, exist_ok=True)
            clean_stale(path)
            self.folder = path
        else:
            self._cm = staged_output(out, overwrite, inputs, "train")
            self.folder = self._cm.__enter__()
        self._ended = False

    def end(self, error):
        """Finish (error None) or abandon the run; the folder it is now in, or None."""
        if self._ended:
            return self.out
        self._ended = True
        if self._cm is not None:
            if error is None:
                self._cm.__exit__(None, None, None)
                return self.out
            self._cm.__exit__(type(error), error, error.__traceback__)
            return None
        if error is not None and not (any(self.path.glob("checkpoints/*/step*.zip"))
                                      or any(self.path.glob("*.zip"))):
            for p in list(self.path.iterdir()):  # the folder was new or empty: all is this run's
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            if self.created:
                self.path.rmdir()
            return None
        record_outputs(self.path, "train", set())
        return self.out
