"""Model families shared by the labs, and the registry that rebuilds any saved model from its config.

Every model takes images in [0, 1] and normalises inside (``Normalize``), so attacks (lab4) work in pixel space
and a checkpoint carries its own preprocessing. A model's config is a plain dict saved in the safetensors
metadata of ``model.safetensors``; ``load_model(run_dir)`` rebuilds it without importing the lab that trained it.

Families:
    mlp  input → Linear(width) → ReLU → depth × block → Linear(classes)
         residual block: x + fc2(ReLU(fc1(x)));  plain block: fc2(ReLU(fc1(x))) — the same block without its
         skip, so plain and residual nets of equal depth have the same layers and parameters (He et al. compare
         networks that differ only by the shortcut). ``plain_block="single"`` is the seeds' one-layer plain block
         ReLU(fc(x)), kept to reproduce their tables.
    cnn  3×3 stem conv + BN + ReLU → stages × depth BasicBlocks → global average pool → Linear(classes)
         BasicBlock: ReLU(BN(conv(ReLU(BN(conv(x))))) + skip) with two 3×3 convs; plain: the same without the
         skip. Where a stage halves the resolution and doubles the channels, the skip is parameter-free
         (``shortcut="identity"``: subsample by 2 and pad the new channels with zeros, the paper's option A for
         CIFAR), so again plain and residual have the same parameters; ``shortcut="projection"`` is a 1×1 conv + BN
         (option B). stages=3, depth=n, channels=16 is the paper's CIFAR ResNet-(6n+2) family.

Configs saved before ``plain_block`` and ``shortcut`` existed load as what they were: single-layer plain blocks
and projection shortcuts (``ModelConfig.from_dict``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dla_core.errors import DlaError
from dla_core.runs import MODEL, atomic_write

#### Configs ####

PLAIN_BLOCKS = ("double", "single")
SHORTCUTS = ("identity", "projection")


@dataclass(frozen=True)
class ModelConfig:
    family: str
    in_shape: tuple[int, int, int]  # (C, H, W) of the input images
    num_classes: int
    residual: bool = True
    depth: int = 4  # blocks (per stage for the cnn)
    width: int = 64  # mlp hidden width / cnn channels of the first stage
    stages: int = 1  # cnn only: each further stage halves the resolution and doubles the channels
    mean: tuple[float, ...] = (0.5,)  # per-channel normalisation, applied inside the model
    std: tuple[float, ...] = (0.5,)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, e.g. lab labels
    plain_block: str = (
        "double"  # mlp, plain only: double (the residual block minus its skip) | single (seeds')
    )
    shortcut: str = (
        "identity"  # cnn, residual only, where the shape changes: identity (zero-pad) | projection
    )

    def __post_init__(self) -> None:
        if self.plain_block not in PLAIN_BLOCKS:
            raise DlaError(f"plain_block must be one of {', '.join(PLAIN_BLOCKS)}, not {self.plain_block!r}")
        if self.shortcut not in SHORTCUTS:
            raise DlaError(f"shortcut must be one of {', '.join(SHORTCUTS)}, not {self.shortcut!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        d = dict(d)
        d.setdefault("plain_block", "single")  # saved before the option existed: the one-layer plain block
        d.setdefault("shortcut", "projection")  # … and the 1×1 projection shortcut
        d["in_shape"] = tuple(d["in_shape"])
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def model_config_for(data: Any, family: str, **arch: Any) -> ModelConfig:
    """The config of a ``family`` model for an ``ImageSet`` (the training split): input shape, classes, the
    normalisation statistics of the split, and in ``extra`` the dataset spec, class names and class map (which
    original class each label is), so that every run records what its labels mean. ``arch``: depth, width, …;
    an ``extra`` given there is merged over the data's."""
    mean, std = data.stats()
    extra = {
        "dataset": data.spec,
        "classes": list(data.classes),
        "class_map": list(data.class_map),
        **({"data_source": dict(data.source)} if getattr(data, "source", None) else {}),  # folders: how split
        **arch.pop("extra", {}),
    }
    return ModelConfig(family, data.shape, data.num_classes, mean=mean, std=std, extra=extra, **arch)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics as buffers so they travel with the weights."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """normalize → features → head. ``features(x)`` gives the penultimate representation (lab1 transfer,
    lab4 Mahalanobis / autoencoder), ``features_and_logits(x)`` both in one pass; ``blocks`` is the list of depth-wise blocks (freezing, grad norms)."""

    def __init__(
        self, config: ModelConfig, stem: nn.Module, blocks: list[nn.Module], pool: nn.Module, feature_dim: int
    ):
        super().__init__()
        self.config = config
        self.normalize = Normalize(config.mean, config.std)
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.pool = pool
        self.head = nn.Linear(feature_dim, config.num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(self.normalize(x))))  # (B, feature_dim)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate features (B, feature_dim) and the logits (B, classes) of one forward pass: the one
        feature hook of lab4's feature-space detectors (the logits are ``head(features)``, as in ``forward``)."""
        f = self.features(x)
        return f, self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, classes)


#### MLP ####


class DenseBlock(nn.Module):
    """fc2(ReLU(fc1(x))), plus x when residual: the plain block is the residual block without its skip."""

    def __init__(self, width: int, residual: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(F.relu(self.fc1(x)))
        return x + out if self.residual else out


class ResidualDense(DenseBlock):
    def __init__(self, width: int):
        super().__init__(width, residual=True)


class PlainDense(DenseBlock):
    def __init__(self, width: int):
        super().__init__(width, residual=False)


class SingleDense(nn.Module):
    """The seeds' plain block, ReLU(fc(x)): one weight layer, half a residual block's (``plain_block="single"``)."""

    def __init__(self, width: int):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(x))


def build_mlp(c: ModelConfig) -> Classifier:
    n_in = c.in_shape[0] * c.in_shape[1] * c.in_shape[2]
    stem = nn.Sequential(nn.Flatten(), nn.Linear(n_in, c.width), nn.ReLU())
    if c.residual:
        blocks: list[nn.Module] = [ResidualDense(c.width) for _ in range(c.depth)]
    elif c.plain_block == "single":
        blocks = [SingleDense(c.width) for _ in range(c.depth)]
    else:
        blocks = [PlainDense(c.width) for _ in range(c.depth)]
    return Classifier(c, stem, blocks, nn.Identity(), c.width)


#### CNN ####


class PadShortcut(nn.Module):
    """The parameter-free skip where the shape changes (option A): subsample by ``stride``, zero-pad channels."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN. Residual: add the input (zero-padded, or a 1×1 conv + BN projection with
    ``shortcut="projection"``, when stride/channels change); plain: the same layers without the addition."""

    def __init__(self, c_in: int, c_out: int, stride: int, residual: bool, shortcut: str = "identity"):
        super().__init__()
        if c_out < c_in:
            raise ValueError("a block may keep or widen the channels, not narrow them")
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.residual = residual
        self.shortcut: nn.Module = nn.Identity()
        if residual and (stride != 1 or c_in != c_out):
            if shortcut == "projection":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )
            else:
                self.shortcut = PadShortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            out = out + self.shortcut(x)
        return F.relu(out)


def build_cnn(c: ModelConfig) -> Classifier:
    stem = nn.Sequential(
        nn.Conv2d(c.in_shape[0], c.width, 3, 1, 1, bias=False), nn.BatchNorm2d(c.width), nn.ReLU()
    )
    blocks: list[nn.Module] = []
    ch = c.width
    for s in range(c.stages):
        out = c.width * 2**s
        for i in range(c.depth):
            blocks.append(BasicBlock(ch, out, 2 if (s > 0 and i == 0) else 1, c.residual, c.shortcut))
            ch = out
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(c, stem, blocks, pool, ch)


#### Registry ####

MODEL_FAMILIES: dict[str, Callable[[ModelConfig], nn.Module]] = {"mlp": build_mlp, "cnn": build_cnn}


def register_family(name: str, builder: Callable[[ModelConfig], nn.Module]) -> None:
    MODEL_FAMILIES[name] = builder


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    c = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
    if c.family not in MODEL_FAMILIES:
        raise DlaError(f"unknown model family {c.family!r} (known: {', '.join(MODEL_FAMILIES)})")
    return MODEL_FAMILIES[c.family](c)


def weight_layers(config: ModelConfig) -> int:
    """Weight layers on the path from input to output, as the paper counts them (stem + blocks + head;
    projection shortcuts not counted): what "depth" means in a table that compares plain with residual."""
    if config.family == "mlp":
        single = not config.residual and config.plain_block == "single"
        return 1 + (1 if single else 2) * config.depth + 1
    if config.family == "cnn":
        return 1 + 2 * config.depth * config.stages + 1
    raise ValueError(f"weight_layers knows the mlp and cnn families, not {config.family!r}")


def weight_layer_names(model: nn.Module) -> list[str]:
    """The modules ``weight_layers`` counts, input to output: the conv and linear layers on the main path (not a
    projection shortcut's 1×1 conv, not BatchNorm's scale and shift); as gradient norms name them."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) and "shortcut" not in name.split(".")
    ]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def save_model(path: Path, model: nn.Module, config: ModelConfig) -> None:
    """Write weights + config to a safetensors file, atomically."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"model_config": json.dumps(config.to_dict())}
    atomic_write(Path(path), lambda p: save_file(state, str(p), metadata=meta))


def load_model(source: Path, map_location: str = "cpu") -> nn.Module:
    """Rebuild a model from a run folder (its ``model.safetensors``) or a safetensors file."""
    from safetensors import safe_open

    path = Path(source)
    if path.is_dir():
        path = path / MODEL
    if not path.exists():
        raise DlaError(
            f"no trained model at {path}; pass the --out folder of a finished training run "
            "(a Hugging Face model folder: --model hf:FOLDER)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        config = ModelConfig.from_dict(json.loads(meta["model_config"]))
        state = load_file(str(path), device=map_location)
    except Exception as e:  # SafetensorError, missing metadata, bad JSON: all mean "not ours"
        raise DlaError(f"{path} is not a dla model file ({e})") from None
    model = build_model(config)
    model.load_state_dict(state)
    return model


def model_config_of(model: nn.Module) -> ModelConfig:
    config = getattr(model, "config", None)
    if not isinstance(config, ModelConfig):
        raise TypeError("model has no dla ModelConfig")
    return config
