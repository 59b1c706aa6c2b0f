"""Where images come from: the embedded digits, torchvision CIFAR, an ImageFolder tree or a pack of it, on
local disk or in object storage (``s3://``, ``gs://``: whatever pyarrow's filesystems open).

A source is an indexable list of (image, label) with its labels known up front (splits are made from the
labels before any image is decoded: a remote tree is listed, a pack's label column read, no image fetched).
Each source also says whether the dataset has a test split of its own, and carries a fingerprint of its
listing that runs record, so a re-run on other data is refused.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.folder_listing import check_distinct_files, list_image_folder, list_remote_folder
from pipeline.data.packed import MANIFEST, PackedSource, decode, listing_fingerprint, read_manifest
from pipeline.shared.errors import UserError
from pipeline.shared.storage import check_reachable, filesystem, first_line, is_uri, join

IMAGE_CHECK_LIMIT = 20_000  # trees up to this size are checked image by image before training; larger ones by sample
IMAGE_CHECK_SAMPLE = 2_000


class ImageSource(Protocol):
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...


class ArraySource:
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, C)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], name: str) -> None:
        self.images, self.labels, self.classes, self.name = images, np.asarray(labels, dtype=np.int64), classes, name
        self.fingerprint = listing_fingerprint([name], self.labels, classes)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


TEST_DIRS = ("val", "test")  # an ImageFolder tree's own test split, beside train/


class FolderSource:
    """An ImageFolder directory (``<root>/<class>/<image>``) on disk or in object storage (``samples`` are then
    URIs), decoded lazily by PIL."""

    def __init__(self, root: Path | str, mode: str, tree: Path | str | None = None) -> None:
        tree = str(tree or root)
        if is_uri(str(root)):
            samples, labels, classes = list_remote_folder(str(root))
        else:
            samples, labels, classes = list_image_folder(Path(root), Path(tree))
        self.root, self.mode = root, mode
        self.samples = samples
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes
        prefix = len(tree.rstrip("/")) + 1
        self.fingerprint = listing_fingerprint([s[prefix:].replace("\\", "/") for s in samples], labels, classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        path = self.samples[index]
        if is_uri(path):
            return decode(read_object(path), self.mode, path)
        try:
            with Image.open(path) as img:
                return img.convert(self.mode)
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"unreadable image {path!r}: {exc}") from None

    def check_readable(self, seed: int = 0) -> None:
        """Decode every image (or a seeded sample of a large tree) so a bad file fails before training starts."""
        indices = range(len(self))
        if len(self) > IMAGE_CHECK_LIMIT:
            indices = random.Random(seed).sample(range(len(self)), IMAGE_CHECK_SAMPLE)
        for i in indices:
            path = self.samples[i]
            try:
                with Image.open(path) as img:
                    img.convert(self.mode).load()
            except (OSError, UnidentifiedImageError) as exc:
                raise UserError(f"unreadable image {path!r}: {exc}") from None


def read_file(path: str) -> bytes:
    """The bytes of one image file: a URI in object storage or a local path."""
    if is_uri(path):
        return read_object(path)
    with open(path, "rb") as f:
        return f.read()


def read_object(uri: str) -> bytes:
    """The bytes of one object in object storage; a failure is one line naming it."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (OSError, ValueError) as exc:
        raise UserError(f"image {uri!r} cannot be read: {first_line(exc)}") from None


def _digits() -> ArraySource:
    from sklearn.datasets import load_digits  # scikit-learn loads only for the digits task (start-up time)

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)
    return ArraySource(images, digits.target, [str(i) for i in range(10)], "digits")


def _cifar(name: str, root: str, download: bool, train: bool) -> ArraySource:
    from torchvision.datasets import CIFAR10, CIFAR100  # loaded only by the datasets that need it (start-up time)

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        ds = cls(root, train=train, download=download)
    except RuntimeError as exc:
        raise UserError(
            f"{name} not found under data.root {root!r} ({exc}); point data.root at the folder holding the "
            f"python version of the files, or set data.download to true to fetch them"
        ) from None
    return ArraySource(ds.data, np.asarray(ds.targets), list(ds.classes), f"{name}-{'train' if train else 'test'}")


def open_sources(data: dict, check_images: bool = False) -> tuple[ImageSource, ImageSource | None]:
    """The training pool (train + search, and test when carved) and the dataset's own test split, if any: an
    ImageFolder's ``val/`` or ``test/`` (CIFAR's and most downloads' layout), as a tree or a pack of one."""
    kind = data["dataset"]
    if kind == "digits":
        return _digits(), None
    root = data["root"]
    if is_uri(root):
        if check_reachable(root, "data.root").type.name == "NotFound":
            raise UserError(f"dataset root {root!r} does not exist (data.root for dataset {kind!r})")
    elif not Path(root).exists():
        raise UserError(f"dataset root {root!r} does not exist (data.root for dataset {kind!r})")
    if kind in ("cifar10", "cifar100"):
        if is_uri(root):
            raise UserError(
                f"data.root {root!r}: {kind} is read from local disk; pack it as an ImageFolder tree for object storage"
            )
        return _cifar(kind, root, data["download"], True), _cifar(kind, root, data["download"], False)
    mode = "L" if data["in_chans"] == 1 else "RGB"
    pool, test = _packed(root, mode, data) if data_format(root, data) == "parquet" else open_folder(root, mode)
    if len(pool.classes) < 2:
        raise UserError(
            f"image folder {join(root, 'train')!r} has {len(pool.classes)} class; a classifier needs at least 2 "
            f"(one sub-directory per class)"
        )
    if test is not None and test.classes != pool.classes:
        raise UserError(f"image folder {root!r}: the classes of its test split differ from those of train/")
    if check_images and isinstance(pool, FolderSource) and not is_uri(root):
        pool.check_readable()
        if test is not None:
            test.check_readable()
    return pool, test


def _split_dirs(root: str) -> dict[str, bool]:
    """Which of train/, val/, test/ exist under ``root`` (local or remote: one listing of the root)."""
    if not is_uri(root):
        return {d: (Path(root) / d).is_dir() for d in ("train", *TEST_DIRS)}
    import pyarrow.fs

    fs, path = filesystem(root)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path.rstrip("/"), allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise UserError(f"data.root {root!r} cannot be listed: {first_line(exc)}") from None
    names = {i.path.rstrip("/").rsplit("/", 1)[-1] for i in infos if i.type == pyarrow.fs.FileType.Directory}
    return {d: d in names for d in ("train", *TEST_DIRS)}


def open_folder(root: str, mode: str) -> tuple[FolderSource, FolderSource | None]:
    dirs = _split_dirs(root)
    if not dirs["train"]:
        raise UserError(f"image folder {root!r} has no train/ directory; expected {root}/train/<class>/<image>")
    held_out = [d for d in TEST_DIRS if dirs[d]]
    if len(held_out) > 1:
        raise UserError(
            f"image folder {root!r} has both {held_out[0]}/ and {held_out[1]}/: keep the one that is the test split "
            f"(the search split is carved from train/)"
        )
    local = not is_uri(root)
    pool = FolderSource(Path(root) / "train" if local else join(root, "train"), mode, Path(root) if local else root)
    test = None
    if held_out:
        test_dir = Path(root) / held_out[0] if local else join(root, held_out[0])
        test = FolderSource(test_dir, mode, Path(root) if local else root)
    if local:
        check_distinct_files(
            {"train/": pool.samples, **({f"{held_out[0]}/": test.samples} if test else {})}, Path(root)
        )
    return pool, test


def _packed(root: str, mode: str, data: dict) -> tuple[PackedSource, PackedSource | None]:
    manifest = read_manifest(root)
    if manifest is None:
        raise UserError(f"data.root {root!r}: data.format is parquet but there is no {MANIFEST} (an unfinished pack?)")
    held_out = [d for d in TEST_DIRS if d in manifest["splits"]]
    test = PackedSource(root, held_out[0], manifest, mode) if held_out else None
    return PackedSource(root, "train", manifest, mode), test


def data_format(root: str, data: dict) -> str:
    """``folder`` or ``parquet``: ``data.format``, or what the root holds when it is ``auto``. A root holding
    both a pack's manifest and a tree is refused (which one would the run read?)."""
    fs, path = filesystem(root)
    try:
        has_manifest = fs.get_file_info(join(path, MANIFEST)).type.name == "File"
    except (OSError, ValueError) as exc:
        raise UserError(f"data.root {root!r} cannot be reached: {first_line(exc)}") from None
    wanted = data.get("format", "auto")
    if has_manifest and _has_class_dirs(root):
        raise UserError(
            f"data.root {root!r} holds both a pack ({MANIFEST}, train/*.parquet) and an image tree "
            f"(train/<class>/): keep them under different roots"
        )
    found = "parquet" if has_manifest else "folder"
    if wanted not in ("auto", found):
        raise UserError(f"data.root {root!r} holds a {found} dataset, not {wanted} (data.format = {wanted!r})")
    return found


def _has_class_dirs(root: str) -> bool:
    """Whether train/ (or val/, test/) holds sub-directories: a tree's classes, not a pack's shard files."""
    import pyarrow.fs

    fs, path = filesystem(root)
    for split in ("train", *TEST_DIRS):
        selector = pyarrow.fs.FileSelector(join(path, split), allow_not_found=True)
        if any(i.type == pyarrow.fs.FileType.Directory for i in fs.get_file_info(selector)):
            return True
    return False


def uses_ray_data(data: dict) -> bool:
    """Whether training decodes through Ray Data tasks (``data.ingest``; ``auto``: for data in object storage
    and for packs, where a DataLoader would fetch one object per image from inside the training worker)."""
    if data["ingest"] != "auto":
        return data["ingest"] == "ray_data"
    root = data.get("root")
    if data["dataset"] != "imagefolder" or not root:
        return False
    return is_uri(root) or data_format(root, data) == "parquet"
