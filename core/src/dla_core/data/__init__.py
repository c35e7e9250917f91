"""Vision data: the dataset registry and specs, readers of the official formats, in-memory batches."""

from dla_core.data.batches import (
    Augment,
    Batches,
    ImageBatches,
    epoch_generator,
    random_crop,
    random_flip,
    shard,
)
from dla_core.data.registry import (
    DATASETS,
    ImageSet,
    Splits,
    fake_data,
    load_dataset,
    load_parts,
    load_splits,
    parse_spec,
)

DEFAULT_AUGMENT = {
    "cifar10": Augment(crop_padding=4, flip=True),
    "cifar100": Augment(crop_padding=4, flip=True),
}


def default_augment(spec: str) -> Augment | None:
    """The usual augmentation for a dataset: crop + flip for CIFAR, none for digits."""
    return DEFAULT_AUGMENT.get(parse_spec(spec)[0])


__all__ = [
    "DATASETS",
    "DEFAULT_AUGMENT",
    "Augment",
    "Batches",
    "ImageBatches",
    "ImageSet",
    "Splits",
    "default_augment",
    "epoch_generator",
    "fake_data",
    "load_dataset",
    "load_parts",
    "load_splits",
    "parse_spec",
    "random_crop",
    "random_flip",
    "shard",
]
