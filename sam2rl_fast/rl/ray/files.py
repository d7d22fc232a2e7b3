"""Files between the driver and Ray's workers, as bytes: workers need no shared file system.

A task sends back what it wrote in its temporary folder (`folder_files`) and the driver
writes it into the run folder (`write_files`); agent files go to the tasks as
(name, bytes) (`sent_agents`, `agents_here`), a dataset video as its frames' and
annotations' files (`pack_video`, `unpack_video`).
"""

from __future__ import annotations

from pathlib import Path


def write_files(out: Path, files: dict[str, bytes], last: str | None = None) -> None:
    """Write `files` (relative path -> bytes) under `out`, each whole, `last` after the others."""
    for rel in sorted(files, key=lambda r: r == last):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".fleet-tmp")
        tmp.write_bytes(files[rel])
        tmp.replace(path)


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), as `write_files` takes them."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def sent_agents(agents) -> list:
    """Agents as tasks get them: built-in names as they are, files as (name, bytes)."""
    return [(Path(a).name, Path(a).read_bytes()) if isinstance(a, (str, Path)) and Path(a).is_file()
            else a for a in agents]


def agents_here(agents, folder: Path) -> list:
    """`sent_agents`' files written into `folder`: agents as paths and built-in names."""
    out = []
    folder.mkdir(parents=True, exist_ok=True)
    for a in agents:
        if isinstance(a, tuple):  # (file name, bytes), as `sent_agents` sends a file
            (folder / a[0]).write_bytes(a[1])
            a = str(folder / a[0])
        out.append(a)
    return out


def pack_video(video) -> dict:
    """A `DatasetVideo`'s files as bytes (frames and annotations, as stored: compressed)."""
    if video.layout == "sav":
        ann = {f: {o: (p.name, p.read_bytes()) for o, p in per.items()} for f, per in video.annotations.items()}
    else:
        ann = {f: (p.name, p.read_bytes()) for f, p in video.annotations.items()}
    return {"name": video.name, "layout": video.layout, "annotations": ann,
            "frames": [(p.name, p.read_bytes()) for p in video.frames]}


def unpack_video(packed: dict, root: Path):
    """The `DatasetVideo` of `pack_video`'s files, written under `root`."""
    from sam2rl_fast.data.datasets import DatasetVideo

    def put(sub: str, name: str, data: bytes) -> Path:
        path = root / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    frames = [put("frames", n, d) for n, d in packed["frames"]]
    if packed["layout"] == "sav":
        ann = {f: {o: put(f"annotations/{o:03d}", *nd) for o, nd in per.items()}
               for f, per in packed["annotations"].items()}
    else:
        ann = {f: put("annotations", *nd) for f, nd in packed["annotations"].items()}
    return DatasetVideo(packed["name"], frames, packed["layout"], ann)
