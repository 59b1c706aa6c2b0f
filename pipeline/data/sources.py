"""Where images come from: the embedded digits, torchvision CIFAR, or an ImageFolder tree.

A source is an indexable list of (image, label) with its labels known up front (splits are made from the
labels before any image is decoded). Each source also says whether the dataset has a test split of its own.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.folder_listing import check_distinct_files, list_image_folder
from pipeline.shared.errors import UserError

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

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


TEST_DIRS = ("val", "test")  # an ImageFolder tree's own test split, beside train/


class FolderSource:
    """An ImageFolder directory (``<root>/<class>/<image>``), decoded lazily by PIL."""

    def __init__(self, root: Path, mode: str, tree: Path | None = None) -> None:
        samples, labels, classes = list_image_folder(root, tree or root)
        self.root, self.mode = root, mode
        self.samples = samples
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = classes

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image:
        path = self.samples[index]
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
    ImageFolder's ``val/`` or ``test/`` (CIFAR's and most downloads' layout)."""
    kind = data["dataset"]
    if kind == "digits":
        return _digits(), None
    root = data["root"]
    if not Path(root).exists():
        raise UserError(f"dataset root {root!r} does not exist (data.root for dataset {kind!r})")
    if kind in ("cifar10", "cifar100"):
        return _cifar(kind, root, data["download"], True), _cifar(kind, root, data["download"], False)
    mode = "L" if data["in_chans"] == 1 else "RGB"
    train_dir = Path(root) / "train"
    if not train_dir.is_dir():
        raise UserError(f"image folder {root!r} has no train/ directory; expected {root}/train/<class>/<image>")
    held_out = [d for d in TEST_DIRS if (Path(root) / d).is_dir()]
    if len(held_out) > 1:
        raise UserError(
            f"image folder {root!r} has both {held_out[0]}/ and {held_out[1]}/: keep the one that is the test split "
            f"(the search split is carved from train/)"
        )
    pool = FolderSource(train_dir, mode, Path(root))
    if len(pool.classes) < 2:
        raise UserError(
            f"image folder {str(train_dir)!r} has {len(pool.classes)} class; a classifier needs at least 2 "
            f"(one sub-directory per class)"
        )
    test = FolderSource(Path(root) / held_out[0], mode, Path(root)) if held_out else None
    if test is not None and test.classes != pool.classes:
        raise UserError(f"image folder {root!r}: the classes of {held_out[0]}/ differ from those of train/")
    check_distinct_files({"train/": pool.samples, **({f"{held_out[0]}/": test.samples} if test else {})}, Path(root))
    if check_images:
        pool.check_readable()
        if test is not None:
            test.check_readable()
    return pool, test
