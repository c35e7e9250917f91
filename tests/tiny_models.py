"""Tiny random-weight models of other families saved the way their users save them (offline, seconds): shared by
core's adapter tests and lab1's transfer tests."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_hf_vit(folder: Path, num_labels: int = 4, seed: int = 0) -> Path:
    """A tiny random ViT (32 px, one layer) with its image processor in ``folder`` (``save_pretrained``)."""
    import transformers

    config = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=num_labels,
    )  # fmt: skip
    torch.manual_seed(seed)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                                               image_std=[0.2, 0.25, 0.3])  # fmt: skip
    processor.save_pretrained(folder)
    return folder


def save_tiny_hf_resnet(folder: Path, num_labels: int = 3, seed: int = 0) -> Path:
    """A tiny random Hugging Face ResNet (two stages, BatchNorm) with a ConvNeXt-style processor (shortest edge
    32, crop_pct 0.875) in ``folder``."""
    import transformers

    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels
    )
    torch.manual_seed(seed)
    transformers.ResNetForImageClassification(config).save_pretrained(folder)
    transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    return folder
