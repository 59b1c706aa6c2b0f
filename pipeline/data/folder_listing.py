"""Listing an ImageFolder tree (``<split>/<class>/.../<image>``) so that no file is seen twice.

The order is torchvision's ``ImageFolder`` (classes sorted, each class's directories walked in sorted order,
links followed), so the labels, and with them the split plan and its fingerprints, are the ones a tree always
had. What torchvision does not guard against is refused with one line: a directory link that leads back into
the dataset's tree (a loop, or another split's images pulled into this one) and a file reached twice (under two
labels or in two splits, by links). Either would leak training images into the search or test split silently.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pipeline.shared.errors import UserError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's


def list_image_folder(directory: Path, tree: Path) -> tuple[list[str], list[int], list[str]]:
    """The image paths of ``directory`` (one split), their class indices and the class names. ``tree`` is the
    dataset's root: no directory link may lead into it."""
    try:
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except OSError as exc:
        raise UserError(f"image folder {str(directory)!r}: {exc.strerror or exc}") from None
    if not classes:
        raise UserError(f"image folder {str(directory)!r} has no class directories (expected <class>/<image>)")
    samples, labels, empty = [], [], []
    for index, name in enumerate(classes):
        found = [p for p in _walk(directory / name, tree) if p.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            empty.append(name)
        samples += found
        labels += [index] * len(found)
    if empty:
        raise UserError(
            f"image folder {str(directory)!r}: class {empty[0]!r} has no images "
            f"(extensions {', '.join(IMG_EXTENSIONS)}); remove it or add its images"
        )
    return samples, labels, classes


def _walk(top: Path, tree: Path) -> Iterable[str]:
    """The files under ``top`` in torchvision's order, following links except those leading into ``tree``."""
    root = os.path.realpath(tree)
    walked = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if os.path.islink(path) and (real == root or real.startswith(root + os.sep)):
                raise UserError(
                    f"image folder {str(tree)!r}: the link {path!r} leads back into the tree ({real!r}); a link may "
                    f"only lead outside it (its images would be listed twice, or in two splits)"
                )
        walked.append((dirpath, sorted(filenames)))
    for dirpath, filenames in sorted(walked):
        for name in filenames:
            yield os.path.join(dirpath, name)


def check_distinct_files(listings: dict[str, list[str]], tree: Path) -> None:
    """No file (by its real path) listed twice, in one split or across splits: ``listings`` maps a split's
    name to its image paths."""
    seen: dict[str, tuple[str, str]] = {}
    for split, paths in listings.items():
        for path in paths:
            real = os.path.realpath(path)
            if real in seen:
                first, first_split = seen[real]
                raise UserError(
                    f"image folder {str(tree)!r}: {path!r} ({split}) and {first!r} ({first_split}) are the same "
                    f"file ({real!r}); every image must appear once, under one class, in one split"
                )
            seen[real] = (path, split)


def list_remote_folder(uri: str) -> tuple[list[str], list[int], list[str]]:
    """The image URIs of one split of a tree in object storage (``s3://bucket/prefix/train``), their class
    indices and the class names, in the order ``list_image_folder`` gives the same tree on disk (classes
    sorted, then each class's files by (directory, name)): the labels, the split plan and its fingerprints do
    not depend on where the tree lives. One listing request per 1,000 keys; no image is read."""
    import pyarrow.fs

    from pipeline.shared.storage import filesystem, first_line

    fs, base = filesystem(uri)
    base = base.rstrip("/")
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(base, recursive=True))
    except (OSError, ValueError) as exc:
        raise UserError(f"image folder {uri!r} cannot be listed: {first_line(exc)}") from None
    scheme = uri.split("://", 1)[0]
    files: dict[str, list[tuple[str, str]]] = {}
    for info in infos:
        parts = info.path[len(base) + 1 :].split("/")
        if info.type == pyarrow.fs.FileType.Directory and len(parts) == 1:
            files.setdefault(parts[0], [])
        elif info.type == pyarrow.fs.FileType.File and len(parts) >= 2 and info.path.lower().endswith(IMG_EXTENSIONS):
            directory, name = info.path.rsplit("/", 1)
            files.setdefault(parts[0], []).append((directory, name))
    if not files:
        raise UserError(f"image folder {uri!r} has no class directories (expected <class>/<image>)")
    classes = sorted(files)
    empty = [name for name in classes if not files[name]]
    if empty:
        raise UserError(
            f"image folder {uri!r}: class {empty[0]!r} has no images "
            f"(extensions {', '.join(IMG_EXTENSIONS)}); remove it or add its images"
        )
    samples, labels = [], []
    for index, name in enumerate(classes):
        samples += [f"{scheme}://{directory}/{file}" for directory, file in sorted(files[name])]
        labels += [index] * len(files[name])
    return samples, labels, classes
