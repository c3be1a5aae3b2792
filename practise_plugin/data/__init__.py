"""Where tiny sets come from: image folders and files, CIFAR batches, and synthetic images for the data-free
path. They all produce the :class:`~practise_plugin.core.inputs.ImageSet` every strategy consumes."""

from ..core.inputs import DataConfig, ImageSet, sample_tiny_set
from .cifar import load_cifar_batches
from .images import (
    IMAGE_SUFFIXES,
    from_uint8,
    list_images,
    load_image_files,
    load_images,
    load_pixels,
    pixels,
    tiny_set_from,
    write_image_folder,
)
from .synthetic import SynthesisConfig, synthesize

__all__ = [
    "IMAGE_SUFFIXES", "DataConfig", "ImageSet", "SynthesisConfig", "from_uint8", "list_images", "load_cifar_batches",
    "load_image_files", "load_images", "load_pixels", "pixels", "sample_tiny_set", "synthesize", "tiny_set_from",
    "write_image_folder",
]
