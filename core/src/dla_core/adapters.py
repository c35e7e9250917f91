"""Classifiers from anywhere behind one interface: torchvision, timm, Hugging Face, TorchScript and torch.export
files, beside dla's own run folders (``dla_core.model_spec`` parses the ``--model`` spec).

Every model here takes dla's images as they come — (B, C, h, w) floats in [0, 1] at the dataset's size, grey
or RGB — and applies **its own preprocessing** inside (``Preprocessing``: grey → RGB, resize, centre crop,
normalise, with the values of the family's own transform), so attacks and ODIN work in pixel space as with dla's
models, which normalise inside too. An ``AdaptedClassifier`` offers what lab4 and lab1 use of core's
``Classifier``: ``forward`` (logits), ``features`` (the penultimate features), ``features_and_logits`` (both,
one pass) and ``head`` (the final ``nn.Linear``), and ``description`` for the run folder's config.json.

Penultimate features, per family:
    torchvision  the input of the last ``nn.Linear`` of ``fc`` / ``classifier`` / ``heads`` / ``head``
    timm         ``forward_head(forward_features(x), pre_logits=True)``; head: ``get_classifier()``
    hf           the pooled output, the input of the last ``nn.Linear`` of ``classifier``
A TorchScript or torch.export file gives logits only: asking it for features is one Error line.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from dla_core.errors import DlaError
from dla_core.model_spec import FAMILIES, ModelSpec, check_weights, parse_model_spec


class FeaturesUnavailable(DlaError):
    """The model gives logits only (a TorchScript / torch.export file), and a method asked for features."""


#### Preprocessing ####

PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's (and HF's resample=) codes


@dataclass(frozen=True)
class Preprocessing:
    """[0, 1] images → the model's input: grey → RGB, resize, centre crop, normalise (all on whole batches,
    differentiable: ODIN and attacks take gradients through it)."""

    resize: tuple[int, ...]  # (S,): the shorter side to S, keeping the aspect; (H, W): exactly; (): none
    crop: tuple[int, int] | None  # centre crop after resizing
    interpolation: str  # nearest | bilinear | bicubic
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int = 3  # what the model takes; grey images are repeated to 3 channels

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.resize:
            mode = InterpolationMode(self.interpolation)
            x = TF.resize(x, list(self.resize), interpolation=mode, antialias=True)
        if self.crop:
            x = TF.center_crop(x, list(self.crop))
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std  # (B, channels, H, W)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pair(size: Any) -> tuple[int, int]:
    size = [size] if isinstance(size, int) else list(size)
    return (int(size[0]), int(size[-1]))


def from_torchvision_transform(t: Any) -> Preprocessing:
    """A torchvision weights' ``transforms()`` (``ImageClassification``): resize, crop, mean, std."""
    return Preprocessing(
        tuple(t.resize_size), _pair(t.crop_size), t.interpolation.value, tuple(t.mean), tuple(t.std)
    )


def from_timm_transform(compose: Any) -> Preprocessing:
    """timm's eval transform (``create_transform(**resolve_data_config(model=…))``) read step by step."""
    from torchvision import transforms as T

    found: dict[str, Any] = {"resize": (), "crop": None, "interpolation": "bilinear"}
    for step in compose.transforms:
        if isinstance(step, T.Resize):
            found["resize"] = (step.size,) if isinstance(step.size, int) else tuple(step.size)
            found["interpolation"] = step.interpolation.value
        elif isinstance(step, T.CenterCrop):
            found["crop"] = _pair(step.size)
        elif isinstance(step, T.Normalize):
            found["mean"], found["std"] = tuple(map(float, step.mean)), tuple(map(float, step.std))
        elif type(step).__name__ not in ("ToTensor", "MaybeToTensor"):
            raise DlaError(f"timm's transform has a step dla does not apply on tensors: {step}")
    return Preprocessing(**found)


def from_hf_processor(p: Any) -> Preprocessing:
    """A Hugging Face image processor's resize (``size``: height/width exactly, or shortest_edge with
    ``crop_pct``), centre crop (``crop_size``), rescale and normalisation."""
    size = dict(getattr(p, "size", None) or {})
    resize: tuple[int, ...] = ()
    crop = None
    if getattr(p, "do_resize", True) and size:
        if "height" in size:
            resize = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            edge = int(size["shortest_edge"])
            crop_pct = getattr(p, "crop_pct", None)
            if crop_pct is not None and edge < 384:  # ConvNeXt's rule: resize to edge / crop_pct, crop edge
                resize, crop = (int(edge / crop_pct),), (edge, edge)
            else:
                resize = (edge, edge) if crop_pct is not None else (edge,)
        else:
            raise DlaError(f"the image processor's size {size} is neither height/width nor shortest_edge")
    if getattr(p, "do_center_crop", False) and getattr(p, "crop_size", None):
        crop = _pair((p.crop_size["height"], p.crop_size["width"]))
    mean, std = (0.0,), (1.0,)
    if getattr(p, "do_normalize", True):
        mean, std = tuple(map(float, p.image_mean)), tuple(map(float, p.image_std))
    resample = getattr(p, "resample", 2)
    interpolation = PIL_RESAMPLE.get(int(getattr(resample, "value", resample)), "bilinear")
    return Preprocessing(resize, crop, interpolation, mean, std)


#### The adapter ####


class AdaptedClassifier(nn.Module):
    """A classifier of another family behind core's ``Classifier`` interface (see the module docstring)."""

    def __init__(
        self,
        net: nn.Module,
        preprocessing: Preprocessing | None,
        head: nn.Linear | None,
        num_classes: int,
        description: dict[str, Any],
    ):
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing
        self._head = [head]  # a list: not registered twice (it lives inside net)
        self.num_classes = num_classes
        self.description = {**description, "preprocessing": preprocessing and preprocessing.to_dict()}

    @property
    def head(self) -> nn.Linear:
        if self._head[0] is None:
            raise FeaturesUnavailable(self.refusal("its final linear layer"))
        return self._head[0]

    def replace_head(self, num_classes: int) -> nn.Linear:
        """Put a freshly initialised final linear layer for ``num_classes`` where the model's own is (lab1
        transfer: a new head for another dataset); returns it."""
        old = self.head
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        path = next(name for name, m in self.net.named_modules() if m is old)
        parent, _, attr = path.rpartition(".")
        setattr(self.net.get_submodule(parent), attr, new)
        self._head[0], self.num_classes = new, num_classes
        if hasattr(getattr(self.net, "config", None), "num_labels"):  # a Hugging Face model's config follows
            self.net.config.num_labels = num_classes
        return new

    def refusal(self, what: str) -> str:
        d = self.description
        why = f"gives logits only (a {d['family']} file)" if FAMILIES[d["family"]].logits_only else (
            "has no final linear layer dla can read")  # fmt: skip
        return (f"{d['model']} {why}: this method needs {what}; use a torchvision:, timm: or hf: model or a dla "
                "run folder")  # fmt: skip

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.preprocessing is None else self.preprocessing(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The penultimate features (B, D) and the logits (B, classes) of one forward pass."""
        raise FeaturesUnavailable(self.refusal("penultimate features"))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))

    def train(self, mode: bool = True) -> AdaptedClassifier:
        self.training = mode
        for child in self.children():
            with contextlib.suppress(NotImplementedError):  # a torch.export graph: mode fixed when exported
                child.train(mode)
        return self

    @property
    def has_features(self) -> bool:
        return type(self).features_and_logits is not AdaptedClassifier.features_and_logits


class HookedClassifier(AdaptedClassifier):
    """torchvision / HF: the features are the input of the final linear layer, caught by a forward pre-hook."""

    def __init__(self, *args: Any, logits_of: Callable[[Any], torch.Tensor] = lambda out: out, **kw: Any):
        super().__init__(*args, **kw)
        self.logits_of = logits_of
        self._seen: list[torch.Tensor] = []
        self._watch(self.head)

    def _watch(self, head: nn.Linear) -> None:
        head.register_forward_pre_hook(lambda _, inputs: self._seen.append(inputs[0]))

    def replace_head(self, num_classes: int) -> nn.Linear:
        new = super().replace_head(num_classes)
        self._watch(new)
        return new

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._seen.clear()
        logits = self.forward(x)
        features = self._seen[-1].flatten(1)
        self._seen.clear()
        return features, logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_of(self.net(self.prepare(x)))


class TimmClassifier(AdaptedClassifier):
    """timm: ``forward_features`` → ``forward_head(pre_logits=True)`` → the classifier."""

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.net.forward_head(self.net.forward_features(self.prepare(x)), pre_logits=True)
        return z, self.head(z)


def last_linear(module: nn.Module | None) -> nn.Linear | None:
    if module is None or isinstance(module, nn.Linear):
        return module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


#### Families ####


def _need(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DlaError(f"this model needs {module}: pip install 'dla-core[{extra}]'") from None


def _torchvision(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    import torchvision.models as tvm

    if spec.name not in tvm.list_models(module=tvm):
        raise DlaError(f"torchvision has no classifier {spec.name!r} (see torchvision.models.list_models())")
    enum = tvm.get_model_weights(spec.name)
    chosen = spec.weights or "DEFAULT"
    try:
        pretrained = enum[chosen]  # the DEFAULT alias included
    except KeyError:
        raise DlaError(
            f"{spec.name} has no weights {chosen} (it has {', '.join(enum.__members__)})"
        ) from None
    if weights == "none":
        net = tvm.get_model(spec.name, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    else:
        try:
            net = tvm.get_model(spec.name, weights=pretrained)
        except Exception as e:  # no network, a broken cache: the family's own message, on one line
            raise DlaError(f"could not load {spec.name}'s {pretrained.name} weights ({e}); offline, "
                           "--weights none builds the architecture with random weights") from None  # fmt: skip
    head = None
    for attr in ("fc", "classifier", "heads", "head"):
        head = last_linear(getattr(net, attr, None))
        if head is not None:
            break
    described = {"weights": None if weights == "none" else pretrained.name, "transform_of": pretrained.name}
    return _adapted(net, spec, from_torchvision_transform(pretrained.transforms()), head, described)


def _timm(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    timm = _need(*FAMILIES["timm"].needs)
    from timm.data import create_transform, resolve_data_config

    if not timm.is_model(spec.name.split(".")[0]) and not spec.name.startswith("hf-hub:"):
        raise DlaError(f"timm has no model {spec.name!r} (see timm.list_models())")
    try:
        net = timm.create_model(
            spec.name,
            pretrained=weights != "none",
            **({"num_classes": num_classes} if weights == "none" and num_classes else {}),
        )
    except Exception as e:
        raise DlaError(f"could not build timm's {spec.name} ({e}); offline, --weights none builds "
                       "the architecture with random weights") from None  # fmt: skip
    pre = from_timm_transform(create_transform(**resolve_data_config({}, model=net)))
    head = net.get_classifier()
    if not isinstance(head, nn.Linear):
        raise DlaError(f"timm's {spec.name} ends in {type(head).__name__}, not a linear layer dla can read")
    return TimmClassifier(net.eval(), pre, head, head.out_features, _describe(spec, {"weights": weights}))


def _hf(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    transformers = _need(*FAMILIES["hf"].needs)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(spec.name)
        if weights == "none":
            config = transformers.AutoConfig.from_pretrained(
                spec.name, **({"num_labels": num_classes} if num_classes else {})
            )
            net = transformers.AutoModelForImageClassification.from_config(config)
        else:
            net = transformers.AutoModelForImageClassification.from_pretrained(spec.name)
    except Exception as e:
        raise DlaError(
            f"could not load the Hugging Face model {spec.name} ({str(e).splitlines()[0]})"
        ) from None
    head = last_linear(getattr(net, "classifier", None))
    pre = from_hf_processor(processor)
    described = _describe(spec, {"weights": weights, "processor": type(processor).__name__})
    return HookedClassifier(net.eval(), pre, head, net.config.num_labels, described, logits_of=_hf_logits)


def _hf_logits(out: Any) -> torch.Tensor:
    return out.logits


def _file(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    """A TorchScript or torch.export file: it takes [0, 1] images at the data's size and gives logits."""
    try:
        if spec.family == "export":
            net = torch.export.load(spec.name).module()
        else:
            net = torch.jit.load(spec.name, map_location="cpu")
    except Exception as e:
        why = str(e).splitlines()[0].split(". ")[0]  # the loader's first sentence
        raise DlaError(f"{spec.name} is not {FAMILIES[spec.family].summary} ({why})") from None
    return AdaptedClassifier(net, None, None, 0, _describe(spec, {}))


def _describe(spec: ModelSpec, more: dict[str, Any]) -> dict[str, Any]:
    return {"model": spec.text, "family": spec.family, **more}


def _adapted(net: nn.Module, spec: ModelSpec, pre: Preprocessing, head: nn.Linear | None, more: dict):
    described = _describe(spec, more)
    if head is None:
        return AdaptedClassifier(net.eval(), pre, None, 0, described)
    return HookedClassifier(net.eval(), pre, head, head.out_features, described)


LOADERS: dict[str, Callable[[ModelSpec, str, int | None], AdaptedClassifier]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    "hf": _hf,
    "torchscript": _file,
    "export": _file,
}


def load_classifier(
    text: str | Path, weights: str = "pretrained", num_classes: int | None = None
) -> nn.Module:
    """The model of a ``--model`` spec, in eval mode on the CPU: a dla run folder's ``Classifier`` as
    ``models.load_model`` builds it, any other an ``AdaptedClassifier``. ``num_classes``: the classes of
    ``--weights none``'s random head [default: the architecture's own]."""
    spec = parse_model_spec(str(text))
    check_weights(spec, weights)
    if spec.family == "run":
        from dla_core.models import load_model

        return load_model(Path(spec.name))
    return LOADERS[spec.family](spec, weights, num_classes).eval()


def description_of(model: nn.Module) -> dict[str, Any] | None:
    """What config.json records of an adapted model (its spec, family, weights, preprocessing); None for dla's."""
    return getattr(model, "description", None) if isinstance(model, AdaptedClassifier) else None
