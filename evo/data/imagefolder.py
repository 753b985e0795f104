"""``imagefolder=URL``: a folder of class folders of images, on a local/NFS path or ``gs://``.

Two layouts, as people already have them:

- split: ``URL/train/<class>/...`` with optional ``URL/val/<class>/...`` (or ``valid``,
  ``validation``) and ``URL/test/<class>/...`` (or ``testing``);
- one folder: ``URL/<class>/...``, split by the run's fractions (stratified, seeded).

A class is a folder name; its images are the files with an image suffix anywhere under it
(other files and hidden names are ignored). Classes are sorted by name and numbered from 0.
:func:`scan` lists the folder (one recursive listing, nothing decoded) and checks the layout;
:mod:`evo.data.decoding` decodes the images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dna.portable_images import IMAGE_SUFFIXES, is_image_name

from evo.data.decoding import HEADER_BYTES, MAX_FILE_BYTES, DataProblem, Part, Source
from evo.errors import one_line

SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_SPLIT_OF_DIR = {d: split for split, dirs in SPLIT_DIRS.items() for d in dirs}
SUFFIXES_SHOWN = ", ".join(IMAGE_SUFFIXES[:4]) + ", ..."


def open_fs(kind: str, url: str) -> tuple[Any, str]:
    """``(filesystem, root path)`` of a local path or fsspec URL; DataProblem for memory://
    (evo's in-process store) or a URL no installed fsspec backend reads."""
    import fsspec

    if fsspec.core.split_protocol(url)[0] == "memory":
        raise DataProblem(f"{kind}: {url}: memory:// is evo's in-process population store (for tests), not a "
                          "place for data; give a directory or a URL such as gs://BUCKET/PATH")
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise DataProblem(f"{kind}: cannot open {url}: {one_line(exc)}") from None
    return fs, root.rstrip("/") or root


def _shown(fs: Any, path: str, url: str, root: str) -> str:
    """``path`` as the user wrote its root (``gs://b/x/train/a.jpg``, not ``b/x/...``)."""
    return url.rstrip("/") + path[len(root):] if path.startswith(root) else path


def scan(url: str) -> Source:
    """The image folder at ``url`` as a :class:`Source` (file names, labels, classes).

    DataProblem (one line naming the folder or file) when it is missing, not a folder, has
    no class folders, a class folder without images, only one class, images outside class
    folders, a folder that is not a split next to ``train/``, or validation/test classes
    that have no training folder.
    """
    kind = "imagefolder"
    fs, root = open_fs(kind, url)
    try:
        if not fs.isdir(root):
            what = "is a file, not a folder" if fs.exists(root) else "does not exist"
            raise DataProblem(f"{kind}: {url} {what}; expected {url}/train/<class>/<image> or {url}/<class>/<image>")
        listing = fs.find(root, withdirs=True, detail=True)
    except DataProblem:
        raise
    except Exception as exc:  # network/permission errors from any fsspec backend
        raise DataProblem(f"{kind}: cannot list {url}: {one_line(exc)}") from None
    files: list[tuple[tuple[str, ...], int, str]] = []   # (parts below root, size, full path)
    dirs: set[tuple[str, ...]] = set()
    for path, info in listing.items():
        path = path.rstrip("/")
        if not path.startswith(root + "/"):
            continue
        rel = tuple(path[len(root) + 1:].split("/"))
        if any(p.startswith(".") for p in rel):
            continue
        if info.get("type") == "directory":
            dirs.add(rel)
        else:
            files.append((rel, int(info.get("size") or 0), path))
            dirs.update(rel[:i] for i in range(1, len(rel)))
    files.sort()
    shown = lambda rel: url.rstrip("/") + "/" + "/".join(rel)   # noqa: E731
    top = {rel[0] for rel in dirs if len(rel) >= 1}
    layout = "split" if top & set(SPLIT_DIRS["train"]) else "one folder"
    if layout == "split":
        strays = sorted(d for d in top if d not in _SPLIT_OF_DIR and not d.startswith("_"))
        if strays:
            raise DataProblem(f"{kind}: {shown((strays[0],))} is not a split: next to train/, only "
                              f"{', '.join(sorted(_SPLIT_OF_DIR))} folders may hold images")
        seen: dict[str, str] = {}
        for d in sorted(top & set(_SPLIT_OF_DIR)):
            split = _SPLIT_OF_DIR[d]
            if split in seen:
                raise DataProblem(f"{kind}: {url} has both {seen[split]}/ and {d}/; keep one {split} folder")
            seen[split] = d
        split_dirs = {split: (d,) for split, d in seen.items()}
    else:
        split_dirs = {"train": ()}
    per_split: dict[str, dict[str, list[str]]] = {}
    for split, prefix in split_dirs.items():
        depth = len(prefix)
        classes: dict[str, list[str]] = {c[depth]: [] for c in dirs
                                         if len(c) == depth + 1 and c[:depth] == prefix}
        for rel, _, path in files:
            if rel[:depth] != prefix or not is_image_name(rel[-1]):
                continue
            if len(rel) == depth + 1:
                raise DataProblem(f"{kind}: {shown(rel)} is not in a class folder; expected "
                                  f"{shown(prefix + ('<class>', '<image>'))}")
            classes.setdefault(rel[depth], []).append(path)
        for name in sorted(classes):
            if not classes[name]:
                raise DataProblem(f"{kind}: class folder {shown(prefix + (name,))} has no images "
                                  f"({SUFFIXES_SHOWN})")
        per_split[split] = classes
    train = per_split["train"]
    if not train:
        where = shown(split_dirs["train"]) if split_dirs["train"] else url
        raise DataProblem(f"{kind}: {where} has no class folders; expected {where.rstrip('/')}/<class>/<image> "
                          f"({SUFFIXES_SHOWN})")
    names = tuple(sorted(train))
    if len(names) < 2:
        raise DataProblem(f"{kind}: {shown(split_dirs['train'] + (names[0],))} is the only class folder; "
                          "a classifier needs two or more")
    index = {name: i for i, name in enumerate(names)}
    parts = {}
    for split, classes in per_split.items():
        for name in sorted(classes):
            if name not in index:
                raise DataProblem(f"{kind}: {shown(split_dirs[split] + (name,))} has no training folder "
                                  f"{shown(split_dirs['train'] + (name,))}")
        paths = [p for name in sorted(classes) for p in sorted(classes[name])]
        labels = np.array([index[name] for name in sorted(classes) for _ in classes[name]], dtype=np.int64)
        parts[split] = Part(labels=labels, files=paths)
    sizes = {path: size for _, size, path in files}
    images = sum(len(p) for p in parts.values())
    facts = {"layout": layout, "files": images,
             "source_bytes": int(sum(sizes[p] for part in parts.values() for p in part.files))}

    real = {_shown(fs, p, url, root): p for part in parts.values() for p in part.files}
    for part in parts.values():   # messages name files as the user wrote the URL (gs://b/x/..., not b/x/...)
        part.files = [_shown(fs, p, url, root) for p in part.files]

    def fetch(name: str) -> bytes:
        if sizes.get(real[name], 0) > MAX_FILE_BYTES:   # never read it: the listing tells its size
            raise OSError(f"larger than {MAX_FILE_BYTES // 2**20} MiB")
        return fs.cat_file(real[name])

    def fetch_head(name: str) -> bytes:
        return fs.cat_file(real[name], start=0, end=HEADER_BYTES)

    return Source(kind, url, parts, names, fetch=fetch, fetch_head=fetch_head, facts=facts)
