"""Which class each output of a model is, and folder labels turned into those outputs.

Why it exists: an image folder numbers its sub-folders in sorted order, and that is the model's numbering
only when the model was trained on those very folders. A tiny set of ``cat/`` and ``dog/`` photos given to
an ImageNet model would otherwise be scored as classes 0 and 1 (tench and goldfish), and a Fashion-MNIST
folder named after its classes sorts ``ankle-boot`` first where the model's output 0 is ``t-shirt``. Labels
are trusted only where the folder names say which output they are, or where there are exactly as many
folders as outputs (what training on an ImageFolder gives); otherwise top-1 gives way to agreement with
the teacher, and training on labels is refused, with the reason.
"""

from __future__ import annotations

import dataclasses

import torch

from ..core.inputs import ImageSet
from .bundle import ModelBundle


def is_builtin_fmnist(bundle: ModelBundle) -> bool:
    """The built-in teacher, or a checkpoint compressed from it."""
    return any(str(s).startswith("builtin:fmnist") for s in (bundle.spec, bundle.meta.get("base_spec", "")))


def class_aliases(bundle: ModelBundle) -> list[list[str]]:
    """Per output, the names a folder may carry for it (first: the display name); [] where unknown.

    ImageNet-1k heads answer to their WordNet id (``n01440764``) and to each comma-separated name of the
    description (``tench``, ``Tinca tinca``)."""
    if is_builtin_fmnist(bundle):
        from .builtin.fmnist import FMNIST_CLASSES

        return [[name] for name in FMNIST_CLASSES]
    if bundle.num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [[desc, synset, *desc.split(", ")] for synset, desc in zip(info.label_names(), info.label_descriptions())]
    return []


def class_names(bundle: ModelBundle) -> list[str]:
    """Display name of each of the model's outputs, where they are known (built-in teacher, ImageNet-1k)."""
    return [aliases[0] for aliases in class_aliases(bundle)]


def _key(name: str) -> str:
    """Folder names compare without case and with ``_``, ``-`` and spaces alike (``ankle_boot`` = ``Ankle boot``)."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def with_model_labels(data: ImageSet, bundle: ModelBundle) -> tuple[ImageSet, str | None]:
    """``data`` with labels that index ``bundle``'s outputs, or without labels and the reason why.

    Labels of a set that names no classes (built in memory) are the caller's and kept. Folder names that are
    all names of the model's outputs are mapped to those outputs (and the set then carries the model's class
    names); failing that, sorted folder order is kept where the folder count equals the model's outputs."""
    if not data.has_labels or not data.class_names:
        return data, None
    aliases = class_aliases(bundle)
    lookup: dict[str, int | None] = {}
    for index, names in enumerate(aliases):
        for key in {_key(n) for n in names}:
            lookup[key] = index if key not in lookup else None  # a name two outputs share says neither
    outputs = [lookup.get(_key(name)) for name in data.class_names]
    if aliases and all(o is not None for o in outputs):
        mapped = torch.tensor(outputs, dtype=torch.long)[data.labels]
        return dataclasses.replace(data, labels=mapped, class_names=[a[0] for a in aliases]), None
    if bundle.num_classes is None or len(data.class_names) == bundle.num_classes:
        return data, None
    unknown = [name for name, o in zip(data.class_names, outputs) if o is None]
    shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
    why = (f"the {len(data.class_names)} class folders of {data.source or 'the images'} are not the model's "
           f"{bundle.num_classes} classes ({shown} {'is' if len(unknown) == 1 else 'are'} none of its class names), "
           "so their labels are not used: name the folders after the model's classes, or keep one folder per "
           "output in the order it was trained on")
    return dataclasses.replace(data, labels=None, class_names=[]), why


def output_names(bundle: ModelBundle, images: ImageSet | None) -> list[str]:
    """The class names an IR of ``bundle`` is written with: the model's own where known, else the folder
    names of ``images`` where they line up with its outputs, else none."""
    known = class_names(bundle)
    if known or images is None:
        return known
    aligned, _ = with_model_labels(images, bundle)
    return list(aligned.class_names) if aligned.has_labels else []
