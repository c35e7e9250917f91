"""Where `lab1 transfer`'s network comes from (``--from``), and the parts its freezing strategies freeze.

The source is any ``--model`` spec of core (``dla_core.model_spec``): a dla run folder, ``torchvision:NAME``,
``timm:NAME``, ``hf:ID_OR_FOLDER``, loaded by ``dla_core.adapters.load_classifier`` with ``--weights pretrained |
none | FILE`` (a checkpoint, with ``--preprocess``). A model of another family applies its own preprocessing inside (grey → RGB, resize, crop, normalise on
whole batches): a 32 px CIFAR image reaches a torchvision ResNet at the 224 px its weights expect, as in lab4.
A TorchScript / torch.export file gives logits only: it has no features for the SVM and no head to replace.

Parts, declared once per family (the freezing strategies in ``transfer.FROZEN_PARTS`` derive from them): the
ordered ``blocks``; the ``stem``, every parameter registered before the first block; the ``head``, the final
linear layer (a fresh one for the new classes). The blocks are
    run          the network's blocks (its stem: the input normalisation and the stem)
    torchvision  layer1 … layerN (ResNet, ResNeXt, Wide ResNet); else the children of ``features`` after its
                 first, those with parameters (MobileNet, EfficientNet, ConvNeXt, VGG, DenseNet, Swin, …); else
                 ``encoder.layers`` (ViT); else ``trunk_output``'s stages (RegNet)
    timm         timm's own ``group_matcher(coarse=True)`` groups after its stem group (the head left out)
    hf           the base model's ``stages`` / ``layer`` / ``layers``, in its ``encoder`` or in itself (ViT, DeiT,
                 BEiT, ResNet, ConvNeXt, Swin, …; the stem: the embeddings)
A model whose family rule finds no blocks trains ``head`` and ``none`` only; ``freeze-stem`` and ``freeze-early``
are refused before any folder is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from dla_core.adapters import AdaptedClassifier, load_classifier
from dla_core.errors import DlaError
from dla_core.models import Classifier
from dla_core.recipe import Saver
from dla_core.runs import MODEL, RunDir, atomic_write

SOURCE_SEED = 0  # --weights none: the random source every row starts from (its features, its fine-tuning)


#### Parts ####


@dataclass(frozen=True)
class Parts:
    """A classifier's parameter names (as ``named_parameters`` gives them), in registration order."""

    names: tuple[str, ...]
    head: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...] | None  # None: the family's rule found none

    @property
    def body(self) -> list[str]:
        return [n for n in self.names if n not in self.head]

    @property
    def stem(self) -> list[str] | None:
        if not self.blocks:
            return None
        first = self.names.index(self.blocks[0][0])
        return [n for n in self.names[:first] if n not in self.head]


def _with_params(modules) -> list[nn.Module]:
    return [m for m in modules if any(True for _ in m.parameters())]


def _torchvision_blocks(net: nn.Module) -> list[nn.Module] | None:
    if hasattr(net, "layer1"):
        return [getattr(net, f"layer{i}") for i in range(1, 10) if hasattr(net, f"layer{i}")]
    if isinstance(getattr(net, "features", None), nn.Sequential):
        return _with_params(net.features.children())[1:]
    layers = getattr(getattr(net, "encoder", None), "layers", None)
    if isinstance(layers, nn.Sequential | nn.ModuleList):
        return list(layers)
    if isinstance(getattr(net, "trunk_output", None), nn.Sequential):
        return list(net.trunk_output)
    return None


def _hf_blocks(net: nn.Module) -> list[nn.Module] | None:
    base = getattr(net, "base_model", None)
    for holder in (getattr(base, "encoder", None), base):  # transformers 4 (encoder.layer) and 5 (layers)
        for name in ("stages", "layer", "layers"):
            found = getattr(holder, name, None)
            if isinstance(found, nn.Sequential | nn.ModuleList):
                return list(found)
    return None


def _timm_blocks(net: nn.Module) -> list[list[str]] | None:
    from timm.models import group_parameters

    matcher = net.group_matcher(coarse=True) if hasattr(net, "group_matcher") else None
    if not matcher or "stem" not in matcher:
        return None
    groups = list(group_parameters(net, matcher).values())
    return groups[1:]  # after the stem group (the head's group is left out below)


def _names_of(model: nn.Module, modules: list[nn.Module]) -> list[list[str]]:
    name = {id(p): n for n, p in model.named_parameters()}
    return [[name[id(p)] for p in m.parameters()] for m in modules]


def parts_of(model: nn.Module) -> Parts:
    """The parts of a dla ``Classifier`` or an ``AdaptedClassifier`` (see the module docstring)."""
    names = tuple(n for n, _ in model.named_parameters())
    head = tuple(_names_of(model, [model.head])[0])
    blocks: list[list[str]] | None
    if isinstance(model, Classifier):
        blocks = _names_of(model, list(model.blocks))
    else:
        family = model.description["family"]
        if family == "timm":
            found = _timm_blocks(model.net)
            blocks = None if found is None else [[f"net.{n}" for n in group] for group in found]
        else:
            modules = {"torchvision": _torchvision_blocks, "hf": _hf_blocks}[family](model.net)
            blocks = None if modules is None else _names_of(model, modules)
    if blocks is not None:
        blocks = [[n for n in b if n not in head] for b in blocks]
        blocks = [b for b in blocks if b] or None
    return Parts(names, head, None if blocks is None else tuple(map(tuple, blocks)))


#### Loading ####


def check_source(model: nn.Module, spec: str) -> None:
    """A source gives penultimate features and has a final linear layer to replace: or one Error line."""
    if isinstance(model, AdaptedClassifier) and not model.has_features:
        raise DlaError(
            f"--from {model.refusal('penultimate features (SVM / k-NN rows) and a head to replace')}"
        )
    if not isinstance(model, Classifier | AdaptedClassifier):
        raise DlaError(f"{spec}: not a classifier with features (family {model.config.family})")


def load_source(spec: str, weights: str, preprocess: str | None = None) -> nn.Module:
    """The source network as every row starts from it: with ``--weights none``, the same random draw each time
    (``SOURCE_SEED``), the global generators left as they were (the row's seed draws its new head)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SOURCE_SEED)
        model = load_classifier(spec, weights, preprocess=preprocess)
    check_source(model, spec)
    return model


def save_adapted(model: AdaptedClassifier) -> Saver:
    """A fine-tuned model of another family: its network's own state dict (``fc.weight``, …: loadable by the
    family's constructor with the new classes) as model.safetensors, what it is in the metadata."""

    def save(run: RunDir, trained: nn.Module) -> Path:
        from safetensors.torch import save_model

        meta = {"model_source": json.dumps(model.description), "num_classes": str(model.num_classes)}
        atomic_write(run.file(MODEL), lambda p: save_model(model.net, str(p), metadata=meta))
        return run.path / MODEL

    return save
