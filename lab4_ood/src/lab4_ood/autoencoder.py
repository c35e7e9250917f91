"""A convolutional decoder trained on the frozen feature extractor of a classifier.

The encoder is the classifier up to its last block: the conv feature maps (B, C, h, w) of a cnn, or the
penultimate vector (B, D) of an mlp (treated as a 1×1 map). The decoder upsamples back to the input shape
and ends in a sigmoid, so reconstructions live in [0, 1] like the inputs. The reconstruction error
(mean squared, per image) is an OOD score: images unlike the training data reconstruct worse.

The saved file ``autoencoder.safetensors`` holds encoder and decoder weights with both configs in its
metadata, so a recon detector needs nothing else.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from dla_core.engine import StepOutput
from dla_core.errors import DlaError
from dla_core.models import ModelConfig, build_model, model_config_of
from dla_core.runs import atomic_write

AUTOENCODER = "autoencoder.safetensors"


def encoder_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's last feature maps (B, C, h, w); a vector representation becomes (B, D, 1, 1)."""
    if all(hasattr(model, a) for a in ("normalize", "stem", "blocks")):
        h = model.blocks(model.stem(model.normalize(x)))
        if h.dim() == 4:
            return h
    return model.features(x)[:, :, None, None]


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int
    in_size: tuple[int, int]  # (h, w) of the encoder's maps
    out_shape: tuple[int, int, int]  # (C, H, W) of the images
    width: int = 64


class Decoder(nn.Module):
    def __init__(self, c: DecoderConfig):
        super().__init__()
        out_c, out_h, out_w = c.out_shape
        h = c.in_size[0]
        layers: list[nn.Module] = []
        if c.in_size == (1, 1):  # a vector: project to a small map first
            h = max(1, out_h // 4)
            layers += [
                nn.Flatten(),
                nn.Linear(c.in_channels, c.width * h * h),
                nn.Unflatten(1, (c.width, h, h)),
            ]
        else:
            layers += [nn.Conv2d(c.in_channels, c.width, 1)]
        layers.append(nn.ReLU())
        for _ in range(max(0, math.ceil(math.log2(out_h / h)))):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(c.width, c.width, 3, padding=1), nn.ReLU()]
        layers += [nn.Upsample(size=(out_h, out_w)), nn.Conv2d(c.width, out_c, 3, padding=1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net(maps)  # (B, C, H, W) in [0, 1]


class FeatureAutoencoder(nn.Module):
    """Frozen classifier encoder → trainable decoder. The encoder stays in eval mode even in ``train()``."""

    def __init__(self, encoder: nn.Module, decoder_config: DecoderConfig):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.decoder = Decoder(decoder_config)
        self.decoder_config = decoder_config

    @classmethod
    def around(cls, encoder: nn.Module, width: int = 64) -> FeatureAutoencoder:
        shape = model_config_of(encoder).in_shape
        with torch.no_grad():
            maps = encoder_maps(encoder.eval(), torch.zeros(1, *shape))
        return cls(encoder, DecoderConfig(maps.shape[1], tuple(maps.shape[2:]), shape, width))

    def train(self, mode: bool = True) -> FeatureAutoencoder:
        super().train(mode)
        self.encoder.eval()  # frozen BN statistics
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            maps = encoder_maps(self.encoder, x)
        return self.decoder(maps)

    def errors(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error per image (B,)."""
        return (self(x) - x).pow(2).flatten(1).mean(1)


def reconstruction_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    x, _ = batch
    return StepOutput(F.mse_loss(model(x).float(), x), len(x), None)


def save_autoencoder(path: Path, ae: FeatureAutoencoder) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in ae.state_dict().items()}
    meta = {
        "model_config": json.dumps(model_config_of(ae.encoder).to_dict()),
        "decoder_config": json.dumps(asdict(ae.decoder_config)),
    }
    atomic_write(Path(path), lambda p: save_file(state, str(p), metadata=meta))


def load_autoencoder(source: Path, map_location: str = "cpu") -> FeatureAutoencoder:
    path = Path(source)
    if path.is_dir():
        path = path / AUTOENCODER
    if not path.exists():
        raise DlaError(f"no autoencoder at {path}; pass the --out folder of a 'lab4 train-ae' run")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        encoder = build_model(ModelConfig.from_dict(json.loads(meta["model_config"])))
        d = json.loads(meta["decoder_config"])
        dcfg = DecoderConfig(d["in_channels"], tuple(d["in_size"]), tuple(d["out_shape"]), d["width"])
        ae = FeatureAutoencoder(encoder, dcfg)
        ae.load_state_dict(load_file(str(path), device=map_location))
    except DlaError:
        raise
    except Exception as e:
        raise DlaError(f"{path} is not a lab4 autoencoder file ({e})") from None
    return ae.eval()
