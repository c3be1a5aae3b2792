"""Image loading: real image files in ImageFolder / flat layouts, tiny-set sampling, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from practise_plugin import DataError, ImageSet, load_images, sample_tiny_set
from practise_plugin.data.cifar import load_cifar_batches
from practise_plugin.data.images import write_image_folder
from practise_plugin.models.builtin import FMNIST_CONFIG, _samples, foolbox_image_dir
from practise_plugin.models.builtin.fmnist import FMNIST_CLASSES
from practise_plugin.models.classes import with_model_labels
from practise_plugin.models.loading import load_model
from practise_plugin.models.specs import IMAGENET_CONFIG
from practise_plugin.runtime.evaluate import top1


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """60 real Fashion-MNIST PNGs, 6 per class, in ImageFolder layout."""
    s = _samples()
    idx = np.concatenate([np.flatnonzero(s["train_labels"] == c)[:6] for c in range(10)])
    return write_image_folder(s["train_images"][idx], s["train_labels"][idx], tmp_path_factory.mktemp("fm"), list(FMNIST_CLASSES))


def test_image_folder_with_labels_and_balanced_tiny_set(folder):
    full = load_images(folder, FMNIST_CONFIG)
    assert full.images.shape == (60, 1, 28, 28) and full.has_labels
    assert full.class_names == sorted(FMNIST_CLASSES)
    tiny = load_images(folder, FMNIST_CONFIG, num_samples=20, seed=1)
    assert np.bincount(tiny.labels.numpy(), minlength=10).tolist() == [2] * 10  # n >= classes: balanced
    again = load_images(folder, FMNIST_CONFIG, num_samples=20, seed=1)
    assert (again.images == tiny.images).all()


def test_folders_named_after_the_classes_are_scored_as_those_outputs(folder):
    """Sorted, the Fashion-MNIST names start with ankle-boot (the model's output 9): the folder's own
    numbering would score the trained teacher against the wrong class for six of the ten (dress, sandal,
    shirt and sneaker happen to sort into their own place)."""
    teacher = load_model("builtin")
    data = load_images(folder, FMNIST_CONFIG)
    mapped, why = with_model_labels(data, teacher)
    assert why is None and mapped.class_names == list(FMNIST_CLASSES)
    assert [mapped.class_names[y] for y in mapped.labels] == [data.class_names[y] for y in data.labels]
    assert top1(teacher.model, mapped) >= 0.8 and top1(teacher.model, data) <= 0.45
    again, _ = with_model_labels(mapped, teacher)
    assert torch.equal(again.labels, mapped.labels) and again.class_names == mapped.class_names


def test_imagenet_folders_by_wordnet_id_or_name_and_foreign_folders(tmp_path):
    net = load_model("torchvision:resnet18")
    pixels = np.full((3, 40, 40, 3), 128, dtype=np.uint8)
    write_image_folder(pixels, np.arange(3), tmp_path / "in", ["tench", "n01443537", "Great_White_Shark"])
    mapped, why = with_model_labels(load_images(tmp_path / "in", IMAGENET_CONFIG), net)
    # sorted folders: Great_White_Shark (output 2), n01443537 (goldfish, 1), tench (0)
    assert why is None and mapped.labels.tolist() == [2, 1, 0] and len(mapped.class_names) == 1000
    write_image_folder(pixels[:2], np.arange(2), tmp_path / "pets", ["cat", "dog"])
    pets, why = with_model_labels(load_images(tmp_path / "pets", IMAGENET_CONFIG), net)
    assert not pets.has_labels and "cat, dog are none of its class names" in why and "1000 classes" in why
    # One folder per output under names the model does not know: the order it was trained on, kept.
    write_image_folder(np.zeros((10, 28, 28), np.uint8), np.arange(10), tmp_path / "ten")
    ten = load_images(tmp_path / "ten", FMNIST_CONFIG)
    kept, why = with_model_labels(ten, load_model("builtin"))
    assert why is None and torch.equal(kept.labels, ten.labels)


def test_flat_folder_of_rgb_photos_without_labels(tmp_path):
    for f in sorted(foolbox_image_dir().glob("imagenet_0*.jpg")):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    data = load_images(tmp_path, IMAGENET_CONFIG)
    assert data.images.shape == (10, 3, 224, 224) and not data.has_labels
    assert abs(float(data.images.mean())) < 1.5  # normalised with ImageNet mean/std


def test_tiny_set_rules():
    labels = np.repeat(np.arange(10), 50)
    few = sample_tiny_set(labels, 5, seed=0)
    assert len(few) == 5 and len(set(few)) == 5  # fewer than classes: random
    many = sample_tiny_set(labels, 55, seed=0)
    assert (np.bincount(labels[many], minlength=10) >= 5).all()
    assert (sample_tiny_set(labels, 55, seed=0) == many).all() and not (sample_tiny_set(labels, 55, seed=1) == many).all()
    with pytest.raises(DataError, match="only 500 are available"):
        sample_tiny_set(labels, 501)


def test_missing_empty_corrupt_and_wrong_size(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(tmp_path / "nope", FMNIST_CONFIG)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_images(tmp_path / "empty", FMNIST_CONFIG)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("L", (28, 28)).save(bad / "ok.png")
    (bad / "broken.png").write_bytes(b"definitely not a PNG")
    with pytest.raises(DataError, match="broken.png is not a readable image"):
        load_images(bad, FMNIST_CONFIG)
    data = ImageSet(torch.zeros(2, 3, 32, 32))
    with pytest.raises(DataError, match=r"shape \(3, 32, 32\) but the model expects \(1, 28, 28\)"):
        data.check_input_size((1, 28, 28))


def test_cifar_python_batches(tmp_path):
    files = sorted(foolbox_image_dir().glob("cifar10_*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = [int(f.stem.rsplit("_", 1)[1]) for f in files]
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(len(files), -1), "labels": labels}, fh)
    data = load_cifar_batches(tmp_path, IMAGENET_CONFIG)
    assert data.images.shape == (20, 3, 224, 224) and data.labels.tolist() == labels
    with pytest.raises(DataError, match="no CIFAR train batches"):
        load_cifar_batches(tmp_path, IMAGENET_CONFIG, split="train")


class _Payload:
    """Unpickling this calls ``pathlib.Path.touch``: what a tampered CIFAR batch could do."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.target),)


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "test_batch", "wb") as fh:
        pickle.dump({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Payload(str(marker))}, fh)
    with pytest.raises(DataError, match="pathlib.*could run code"):
        load_cifar_batches(tmp_path, IMAGENET_CONFIG)
    assert not marker.exists()
