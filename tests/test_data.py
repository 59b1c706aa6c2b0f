"""Data: the embedded digits, ImageFolder trees, disjoint seeded splits and the test-split guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.task import load_task
from pipeline.data.sources import open_sources
from pipeline.data.splits import SplitDataset, plan_splits, require_role
from pipeline.data.transforms import eval_transform, train_transform
from pipeline.shared.errors import UserError


def test_splits_are_disjoint_seeded_and_per_class() -> None:
    labels = np.repeat(np.arange(5), 40)
    plan = plan_splits(labels, search_per_class=6, test_per_class=4, seed=3)
    train, search, test = set(plan.train), set(plan.search), set(plan.test)
    assert not (train & search) and not (train & test) and not (search & test)
    assert train | search | test == set(range(200))
    assert np.bincount(labels[plan.search]).tolist() == [6] * 5 and np.bincount(labels[plan.test]).tolist() == [4] * 5
    again = plan_splits(labels, 6, 4, seed=3)
    assert np.array_equal(again.search, plan.search) and np.array_equal(again.test, plan.test)
    assert not np.array_equal(plan_splits(labels, 6, 4, seed=4).search, plan.search)
    summary = plan.summary()
    assert summary["search"]["size"] == 30 and summary["test"]["source"] == "carved from training data"
    own = plan_splits(labels, 6, None, seed=3)
    assert own.test is None and len(own.train) == 170


def test_too_few_images_per_class() -> None:
    with pytest.raises(UserError, match="class 1 has 5 training images, too few to hold out 5"):
        plan_splits(np.array([0] * 20 + [1] * 5), search_per_class=3, test_per_class=2, seed=0)


def test_digits_source_and_transforms() -> None:
    task = load_task("digits")
    pool, test = open_sources(task.data)
    assert len(pool) == 1797 and test is None and len(pool.classes) == 10
    plan = plan_splits(pool.labels, 20, 30, 0)
    ds = SplitDataset(pool, plan.train, train_transform(task.data, task.train.augment), "train")
    image, label = ds[0]
    assert image.shape == (1, 8, 8) and 0 <= label < 10
    ev = SplitDataset(pool, plan.search, eval_transform(task.data), "search")
    assert ev[0][0].shape == (1, 8, 8)


def test_scoring_refuses_anything_but_the_search_split() -> None:
    task = load_task("digits")
    pool, _ = open_sources(task.data)
    test = SplitDataset(pool, None, eval_transform(task.data), "test")
    with pytest.raises(UserError, match="needs the 'search' split, got 'test'"):
        require_role(test, "search", "scoring candidates")
    require_role(SplitDataset(pool, None, eval_transform(task.data), "search"), "search", "scoring candidates")


def _tree(root: Path, classes: int = 3, per_class: int = 6, val: bool = False, held_out: str = "val") -> None:
    rng = np.random.default_rng(0)
    for split in ("train", held_out) if val else ("train",):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_imagefolder_with_and_without_val(tmp_path: Path) -> None:
    _tree(tmp_path / "a")
    task = load_task(
        "imagefolder", [f"data.root={tmp_path / 'a'}", "data.image_size=8", "space_overrides.patch_size=2"]
    )
    pool, test = open_sources(task.data, check_images=True)
    assert len(pool) == 18 and test is None and pool.classes == ["class0", "class1", "class2"]
    assert pool.load(0).size == (12, 12)
    _tree(tmp_path / "b", val=True)
    pool, test = open_sources({**task.data, "root": str(tmp_path / "b")})
    assert test is not None and len(test) == 18
    _tree(tmp_path / "t", val=True, held_out="test")  # CIFAR's and most downloads' layout: test/ is the test split
    pool, test = open_sources({**task.data, "root": str(tmp_path / "t")})
    assert test is not None and len(test) == 18 and test.root.name == "test"


def test_imagefolder_errors(tmp_path: Path) -> None:
    data = load_task("imagefolder", [f"data.root={tmp_path}"]).data
    with pytest.raises(UserError, match="does not exist"):
        open_sources({**data, "root": str(tmp_path / "missing")})
    with pytest.raises(UserError, match="has no train/ directory"):
        open_sources(data)
    _tree(tmp_path / "c")
    (tmp_path / "c" / "train" / "class1" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError, match="unreadable image .*broken.jpg"):
        open_sources({**data, "root": str(tmp_path / "c")}, check_images=True)
    _tree(tmp_path / "one", classes=1)
    with pytest.raises(UserError, match="has 1 class; a classifier needs at least 2"):
        open_sources({**data, "root": str(tmp_path / "one")})
    _tree(tmp_path / "both", val=True)
    _tree(tmp_path / "both-test", val=True, held_out="test")
    (tmp_path / "both-test" / "test").rename(tmp_path / "both" / "test")
    with pytest.raises(UserError, match="has both val/ and test/"):
        open_sources({**data, "root": str(tmp_path / "both")})


def test_randaugment_at_full_magnitude_runs() -> None:
    """DeiT's RandAugment reaches posterize with 0 bits at magnitude 10 (the dependency pins keep it working)."""
    task = load_task(
        "imagefolder",
        [
            "data.root=/unused",
            "data.image_size=8",
            "space_overrides.patch_size=2",
            "train.randaugment=rand-m10-n4-inc1",
        ],
    )
    transform = train_transform(task.data, task.train.augment)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert transform(Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))).shape == (3, 8, 8)


def _nested_tree(root: Path, classes: dict[str, int]) -> Path:
    """An ImageFolder ``root/train/<class>/...`` with a nested directory per class (torchvision walks them)."""
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        for i in range(count):
            folder = root / "train" / name / ("deep" if i % 2 else "")
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_folder_listing_keeps_torchvisions_order_and_follows_links_out_of_the_nested_tree(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    from pipeline.data.sources import FolderSource

    root = _nested_tree(tmp_path / "data", {"b": 5, "a": 4, "c": 3})
    outside = _nested_tree(tmp_path / "elsewhere", {"x": 3})
    (root / "train" / "c" / "more").symlink_to(outside / "train" / "x")  # a link out of the tree is followed
    ours = FolderSource(root / "train", "RGB", root)
    theirs = ImageFolder(str(root / "train"))
    assert ours.samples == [p for p, _ in theirs.samples] and list(ours.labels) == theirs.targets
    assert ours.classes == theirs.classes and len(ours) == 15


def test_a_link_back_into_the_tree_or_a_file_listed_twice_is_refused(tmp_path: Path) -> None:
    data = {"dataset": "imagefolder", "in_chans": 3}
    loop = _nested_tree(tmp_path / "loop", {"a": 4, "b": 4})
    (loop / "train" / "a" / "loop").symlink_to("..")  # the reported loop: 90 files became 3,690 samples
    with pytest.raises(UserError, match="the link .*loop' leads back into the tree"):
        open_sources({**data, "root": str(loop)})
    twice = _nested_tree(tmp_path / "twice", {"a": 4, "b": 4})
    (twice / "train" / "b" / "copy.png").symlink_to(twice / "train" / "a" / "0.png")  # one file, two labels
    with pytest.raises(UserError, match=r"are the same file .*every image must appear once"):
        open_sources({**data, "root": str(twice)})
    leak = _nested_tree(tmp_path / "leak", {"a": 4, "b": 4})
    for name in ("a", "b"):
        (leak / "val" / name).mkdir(parents=True)
        (leak / "val" / name / "t.png").symlink_to(leak / "train" / name / "0.png")  # a training image as test
    with pytest.raises(UserError, match=r"\(val/\) and .* \(train/\) are the same file"):
        open_sources({**data, "root": str(leak)})
    empty = _nested_tree(tmp_path / "empty", {"a": 4})
    (empty / "train" / "b").mkdir()
    with pytest.raises(UserError, match="class 'b' has no images"):
        open_sources({**data, "root": str(empty)})
