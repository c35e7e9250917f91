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

``--weights FILE`` (a checkpoint of your own: ``read_checkpoint``) builds the named architecture with the
checkpoint's class count, read from its head, and loads every tensor strictly: a checkpoint that does not fit is
one Error line naming the first keys and shapes that differ. ``--preprocess`` (``preprocessing_of``) replaces
the family's preprocessing with the one the user states; both are recorded in the description.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from dla_core.model_spec import (
    FAMILIES,
    ModelSpec,
    check_weights,
    is_checkpoint,
    parse_model_spec,
    parse_preprocess,
)


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


def _torchvision_weights(spec: ModelSpec) -> Any:
    """The torchvision weights enum member a spec names (DEFAULT when it names none)."""
    import torchvision.models as tvm

    if spec.name not in tvm.list_models(module=tvm):
        raise DlaError(f"torchvision has no classifier {spec.name!r} (see torchvision.models.list_models())")
    enum = tvm.get_model_weights(spec.name)
    chosen = spec.weights or "DEFAULT"
    try:
        return enum[chosen]  # the DEFAULT alias included
    except KeyError:
        raise DlaError(
            f"{spec.name} has no weights {chosen} (it has {', '.join(enum.__members__)})"
        ) from None


def cifar_stem(net: nn.Module) -> nn.Module:
    """A torchvision ResNet with the CIFAR stem: ``conv1`` a 3×3 stride-1 convolution, no max-pool (32 px images
    keep their resolution into ``layer1``), as the CIFAR ResNets of most checkpoints are built."""
    conv = getattr(net, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not isinstance(getattr(net, "maxpool", None), nn.MaxPool2d):
        raise DlaError(f"{type(net).__name__} has no conv1 + maxpool stem to replace")
    net.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision's ResNet
    net.maxpool = nn.Identity()
    return net


def _torchvision(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    import torchvision.models as tvm

    pretrained = _torchvision_weights(spec)
    if weights == "none":
        net = tvm.get_model(spec.name, weights=None, **({"num_classes": num_classes} if num_classes else {}))
    else:
        try:
            net = tvm.get_model(spec.name, weights=pretrained)
        except Exception as e:  # no network, a broken cache: the family's own message, on one line
            raise DlaError(f"could not load {spec.name}'s {pretrained.name} weights ({e}); offline, "
                           "--weights none builds the architecture with random weights") from None  # fmt: skip
    if spec.cifar_stem:
        cifar_stem(net)
    head = None
    for attr in ("fc", "classifier", "heads", "head"):
        head = last_linear(getattr(net, attr, None))
        if head is not None:
            break
    described = {"weights": None if weights == "none" else pretrained.name, "transform_of": pretrained.name}
    if spec.cifar_stem:
        described["stem"] = "cifar: conv1 3x3 stride 1, no max-pool"
    return _adapted(net, spec, from_torchvision_transform(pretrained.transforms()), head, described)


def _timm(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    timm = _need(*FAMILIES["timm"].needs)
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
    pre = _timm_preprocessing(net)
    head = net.get_classifier()
    if not isinstance(head, nn.Linear):
        raise DlaError(f"timm's {spec.name} ends in {type(head).__name__}, not a linear layer dla can read")
    return TimmClassifier(net.eval(), pre, head, head.out_features, _describe(spec, {"weights": weights}))


def _timm_preprocessing(net: nn.Module) -> Preprocessing:
    from timm.data import create_transform, resolve_data_config

    return from_timm_transform(create_transform(**resolve_data_config({}, model=net)))


def _hf(spec: ModelSpec, weights: str, num_classes: int | None) -> AdaptedClassifier:
    transformers = _need(*FAMILIES["hf"].needs)
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(spec.name)
        if weights == "none":
            config = transformers.AutoConfig.from_pretrained(spec.name)
            if num_classes:  # the setter renames the labels LABEL_0… when the count differs
                config.num_labels = num_classes
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
    text: str | Path,
    weights: str = "pretrained",
    num_classes: int | None = None,
    preprocess: str | None = None,
) -> nn.Module:
    """The model of a ``--model`` spec, in eval mode on the CPU: a dla run folder's ``Classifier`` as
    ``models.load_model`` builds it, any other an ``AdaptedClassifier``. ``weights``: pretrained, none or a
    checkpoint file (``model_spec.check_weights``); ``num_classes``: the classes of ``--weights none``'s random
    head [default: the architecture's own; a checkpoint's are its own]; ``preprocess``: a ``--preprocess`` value
    in place of the family's own preprocessing."""
    spec = parse_model_spec(str(text))
    check_weights(spec, weights, preprocess)
    if spec.family == "run":
        from dla_core.models import load_model

        return load_model(Path(spec.name))
    if is_checkpoint(weights):
        model = from_checkpoint(spec, Path(weights))
    else:
        model = LOADERS[spec.family](spec, weights, num_classes)
    if preprocess is not None:
        model.preprocessing = preprocessing_of(preprocess, rgb=FAMILIES[spec.family].named)
        model.description.pop("transform_of", None)
        model.description.update(
            preprocess=preprocess, preprocessing=model.preprocessing and model.preprocessing.to_dict()
        )
    return model.eval()


#### --preprocess ####


def preprocessing_of(text: str, rgb: bool = True) -> Preprocessing | None:
    """A ``--preprocess`` value as a ``Preprocessing`` (None for ``none``): a family's own transform, read
    without its weights, or the values stated. Stated values: grey images are repeated to RGB when three
    means are given or the model is an RGB architecture (``rgb``); one mean and std apply to every channel."""
    p = parse_preprocess(text)
    if p.none:
        return None
    if p.borrow is not None and p.borrow.family == "torchvision":
        return from_torchvision_transform(_torchvision_weights(p.borrow).transforms())
    if p.borrow is not None and p.borrow.family == "timm":
        timm = _need(*FAMILIES["timm"].needs)
        try:
            net = timm.create_model(p.borrow.name, pretrained=False)
        except Exception as e:
            raise DlaError(f"--preprocess {text}: timm cannot build {p.borrow.name} ({e})") from None
        return _timm_preprocessing(net)
    if p.borrow is not None:  # hf
        transformers = _need(*FAMILIES["hf"].needs)
        try:
            return from_hf_processor(transformers.AutoImageProcessor.from_pretrained(p.borrow.name))
        except DlaError:
            raise
        except Exception as e:
            raise DlaError(f"--preprocess {text}: no image processor ({str(e).splitlines()[0]})") from None
    v = dict(p.values)
    return Preprocessing(
        v.get("resize", ()),
        v.get("crop"),
        v.get("interpolation", "bilinear"),
        v["mean"],
        v["std"],
        channels=3 if rgb or len(v["mean"]) == 3 else 1,  # 1: the images' own channels, as they come
    )


#### --weights FILE ####

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net")  # where training scripts keep one
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
SHOWN = 3  # keys named per kind of difference in the mismatch line


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file's state_dict: safetensors, or ``torch.load(weights_only=True)`` of a state_dict or of
    a dict holding one under one of ``STATE_DICT_KEYS``; a whole-model wrapper's prefix (``module.``) dropped."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        why = str(e).strip().splitlines()[0][:200]
        raise DlaError(f"--weights {path}: not a checkpoint dla can read safely ({why}); save the model's "
                       "state_dict() with torch.save or safetensors") from None  # fmt: skip
    for _ in range(2):  # {"state_dict": …} or {"model": {"state_dict": …}}
        if _is_state_dict(state) or not isinstance(state, dict):
            break
        inner = next((state[k] for k in STATE_DICT_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not _is_state_dict(state):
        held = ", ".join(map(str, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise DlaError(f"--weights {path}: holds no state_dict (found {held}; looked under "
                       f"{', '.join(STATE_DICT_KEYS)})")  # fmt: skip
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _head_name(model: AdaptedClassifier) -> str | None:
    head = model._head[0]
    return next((name for name, m in model.net.named_modules() if m is head), None)


def from_checkpoint(spec: ModelSpec, path: Path) -> AdaptedClassifier:
    """The named architecture with the checkpoint's tensors: built random (offline) with the class count of
    the checkpoint's head, then loaded strictly (BatchNorm's ``num_batches_tracked`` may be absent)."""
    state = read_checkpoint(path)
    model = LOADERS[spec.family](spec, "none", None)
    head = _head_name(model)
    classes = state.get(f"{head}.weight") if head else None
    if classes is not None and classes.ndim == 2 and classes.shape[0] != model.num_classes:
        model = LOADERS[spec.family](spec, "none", int(classes.shape[0]))
    own = model.net.state_dict()
    shapes = [k for k in own if k in state and state[k].shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        raise DlaError(mismatch(spec, path, state, own, shapes, missing, unexpected))
    model.net.load_state_dict(state, strict=False)  # every tensor present: only num_batches_tracked may lack
    model.description.update(
        weights="checkpoint",
        checkpoint={"path": str(path.resolve()), "sha256": sha256_of(path), "bytes": path.stat().st_size},
    )
    return model


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def mismatch(spec, path, state, own, shapes, missing, unexpected) -> str:
    """One line: which keys and shapes of the checkpoint differ from the architecture's (the first few)."""
    parts = []
    if shapes:
        shown = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes]
        parts.append(f"shapes differ (checkpoint vs model): {_first(shown)}")
    if missing:
        parts.append(f"missing from the checkpoint: {_first(missing)}")
    if unexpected:
        parts.append(f"not in the model: {_first(unexpected)}")
    line = f"--weights {path} does not fit {spec}: " + "; ".join(parts)
    conv1 = state.get("conv1.weight")
    if spec.family == "torchvision" and not spec.cifar_stem and conv1 is not None and conv1.shape[-1] == 3:
        line += f" — a CIFAR stem (3×3 conv1)? try --model torchvision:{spec.name}+cifar-stem"
    return line


def description_of(model: nn.Module) -> dict[str, Any] | None:
    """What config.json records of an adapted model (its spec, family, weights, preprocessing); None for dla's."""
    return getattr(model, "description", None) if isinstance(model, AdaptedClassifier) else None
