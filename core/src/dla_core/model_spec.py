"""Where a classifier comes from: the one parser of every ``--model`` (no torch here, so ``--help`` stays light).

A spec is a dla run folder (``runs/c10``, as always), a model file, or ``FAMILY:NAME``::

    runs/c10                        a dla run folder (its model.safetensors), or that file
    torchvision:resnet18[:WEIGHTS]  torchvision.models; WEIGHTS an enum name (IMAGENET1K_V1) [default: DEFAULT]
    timm:NAME                       timm.create_model(NAME) (the timm extra)
    hf:ID_OR_FOLDER                 transformers' AutoModelForImageClassification (the hf extra)
    model.pt / model.ts             a TorchScript file (logits only)
    model.pt2                       a torch.export file (logits only)

An existing path is always a path (a folder named ``a:b`` stays a folder). A torchvision ResNet's NAME may end in
``+cifar-stem``: the CIFAR variant most CIFAR ResNet checkpoints use (a 3×3 stride-1 ``conv1``, no max-pool).

``--weights`` applies to the named families: ``pretrained`` (the family's own), ``none`` (random; offline, tests)
or a checkpoint FILE (.pt / .pth / .bin / .ckpt: a state_dict, or a dict holding one; .safetensors) loaded onto
the architecture, its class count read from the checkpoint's head. ``--preprocess`` says how images were
prepared for the model (``parse_preprocess``): needed with a checkpoint file, optional elsewhere.
``dla_core.adapters.load_classifier`` turns a spec into a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from dla_core.errors import DlaError


@dataclass(frozen=True)
class Family:
    name: str
    form: str  # how a spec of it is written (help, errors)
    summary: str
    named: bool = False  # written FAMILY:NAME (the others are paths)
    needs: tuple[str, str] | None = None  # (module, extra of dla-core) when it needs an optional package
    logits_only: bool = False  # gives logits, no penultimate features or head


CIFAR_STEM = "+cifar-stem"  # torchvision:resnet18+cifar-stem: 3×3 stride-1 conv1, no max-pool

FAMILIES = {
    f.name: f
    for f in (
        Family("run", "RUN_FOLDER", "a dla run folder (its model.safetensors)"),
        Family(
            "torchvision",
            "torchvision:NAME[:WEIGHTS]",
            f"torchvision.models; NAME{CIFAR_STEM}: a ResNet with the CIFAR stem",
            named=True,
        ),
        Family("timm", "timm:NAME", "timm.create_model", named=True, needs=("timm", "timm")),
        Family(
            "hf",
            "hf:ID_OR_FOLDER",
            "AutoModelForImageClassification",
            named=True,
            needs=("transformers", "hf"),
        ),
        Family("torchscript", "FILE.pt", "a TorchScript file", logits_only=True),
        Family("export", "FILE.pt2", "a torch.export file", logits_only=True),
    )
}
WEIGHTS = ("pretrained", "none")  # or a checkpoint file with one of CHECKPOINT_SUFFIXES
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # a key of FAMILIES
    name: str  # the run folder / file, the model's name, the hub id or folder
    weights: str | None = None  # torchvision: the weights' enum name (None: DEFAULT)
    text: str = ""  # as the user wrote it
    cifar_stem: bool = False  # torchvision ResNets: conv1 3×3 stride 1, no max-pool (NAME+cifar-stem)

    def __str__(self) -> str:
        return self.text


def parse_model_spec(text: str, option: str = "--model") -> ModelSpec:
    """The spec ``text`` as its family and name, or one Error line naming ``option`` (nothing is read but the
    path's existence)."""
    text = str(text)
    path = Path(text)
    prefix, colon, rest = text.partition(":")
    family = FAMILIES.get(prefix)
    if not path.exists() and colon and family is not None and family.named:
        if not rest:
            raise DlaError(f"{option} {text}: give a name after '{prefix}:' ({family.form})")
        if prefix == "torchvision":
            name, _, weights = rest.partition(":")
            if not name or ":" in weights:
                raise DlaError(
                    f"{option} {text}: write {family.form}, e.g. torchvision:resnet18:IMAGENET1K_V1"
                )
            stem = name.endswith(CIFAR_STEM)
            name = name.removesuffix(CIFAR_STEM)
            if not name or CIFAR_STEM in name or "+" in name:
                raise DlaError(f"{option} {text}: write torchvision:NAME{CIFAR_STEM}, e.g. torchvision:resnet18"
                               f"{CIFAR_STEM} (the only + form)")  # fmt: skip
            if stem and not name.startswith(("resnet", "resnext", "wide_resnet")):
                raise DlaError(f"{option} {text}: {CIFAR_STEM} is a variant of torchvision's ResNets "
                               "(resnet*, resnext*, wide_resnet*)")  # fmt: skip
            if stem and weights:
                raise DlaError(f"{option} {text}: the CIFAR stem has no pretrained weights; "
                               "give --weights CHECKPOINT (or none)")  # fmt: skip
            return ModelSpec("torchvision", name, weights or None, text, stem)
        return ModelSpec(prefix, rest, None, text)
    if path.is_dir() or (path.is_file() and path.suffix == ".safetensors"):  # a run folder or its model file:
        return ModelSpec("run", text, None, text)  # read (or missed) where the model loads, as always
    if path.is_file():
        return ModelSpec("export" if path.suffix == ".pt2" else "torchscript", text, None, text)
    forms = ", ".join(f.form for f in FAMILIES.values())
    raise DlaError(f"{option} {text}: no such folder or file, and not a model spec ({forms})")


def is_checkpoint(weights: str) -> bool:
    """``--weights`` names a checkpoint file (not ``pretrained`` / ``none``)."""
    return weights not in WEIGHTS


def check_weights(spec: ModelSpec, weights: str, preprocess: str | None = None) -> None:
    """``--weights none`` builds a named family's architecture with random weights, a checkpoint FILE loads onto
    it (and then ``--preprocess`` must say how its images were prepared); a model file has its own weights. A
    checkpoint is checked here only for existence and suffix (its tensors are read where the model loads)."""
    named = FAMILIES[spec.family].named
    if is_checkpoint(weights):
        path = Path(weights)
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise DlaError(f"--weights must be pretrained, none or a checkpoint file "
                           f"({', '.join(CHECKPOINT_SUFFIXES)}), not {weights!r}")  # fmt: skip
        if not path.is_file():
            raise DlaError(f"--weights {weights}: no such checkpoint file")
        if not named:
            raise DlaError(f"--weights {weights} loads onto torchvision:, timm: or hf: architectures; "
                           f"{spec} has its own weights")  # fmt: skip
        if spec.weights is not None:
            raise DlaError(f"--model {spec} names pretrained weights, and --weights gives a checkpoint: "
                           "choose one")  # fmt: skip
        if preprocess is None:
            raise DlaError(
                f"--weights {weights}: say how the checkpoint's images were prepared in training, with "
                f"--preprocess {spec.family}:NAME (that family's transform) or --preprocess "
                "resize=…,mean=…,std=… (e.g. mean=0.4914,0.4822,0.4465,std=0.2470,0.2435,0.2616 for CIFAR-10)"
            )
    if weights == "none" and not named:
        raise DlaError(f"--weights none builds torchvision:, timm: or hf: models; {spec} has its own weights")
    if weights == "none" and spec.weights is not None:
        raise DlaError(f"--model {spec} names weights, and --weights none asks for random ones: choose one")
    if weights == "pretrained" and spec.cifar_stem:
        raise DlaError(f"--model {spec}: the CIFAR stem has no pretrained weights; "
                       "give --weights CHECKPOINT (or none)")  # fmt: skip
    if preprocess is not None:
        parse_preprocess(preprocess)
        if spec.family == "run":
            raise DlaError(f"--preprocess: {spec} is a dla run folder, which normalises its images itself")


#### --preprocess ####

PREPROCESS_KEYS = ("resize", "crop", "interpolation", "mean", "std")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a model's images were prepared: borrowed from a family (``borrow``: a ``torchvision:`` / ``timm:`` /
    ``hf:`` spec whose transform is read), stated value by value, or ``none`` (the model takes [0, 1] images)."""

    text: str
    borrow: ModelSpec | None = None
    values: tuple[tuple[str, Any], ...] = ()  # the Preprocessing fields stated (explicit form)
    none: bool = False


def _size(key: str, text: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise DlaError(f"--preprocess {key}={text}: a size is S (the shorter side) or HxW, in pixels")
    return tuple(int(p) for p in parts)


def parse_preprocess(text: str) -> PreprocessSpec:
    """``--preprocess``: ``none``; ``torchvision:NAME[:WEIGHTS]``, ``timm:NAME`` or ``hf:ID_OR_FOLDER`` (that
    model's own transform); or ``resize=S|HxW,crop=S|HxW,interpolation=bilinear,mean=M[,M,M],std=S[,S,S]``
    (mean and std required; a value list runs on after its key until the next ``key=``)."""
    text = str(text).strip()
    if text == "none":
        return PreprocessSpec(text, none=True)
    prefix = text.partition(":")[0]
    if prefix in ("torchvision", "timm", "hf") and "=" not in text:
        spec = parse_model_spec(text)
        if spec.cifar_stem:
            raise DlaError(f"--preprocess {text}: name the model without {CIFAR_STEM}")
        return PreprocessSpec(text, borrow=spec)
    found: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in text.split(",")):
        if "=" in token:
            key, _, token = (p.strip() for p in token.partition("="))
            if key not in PREPROCESS_KEYS or key in found:
                raise DlaError(f"--preprocess {text}: {'repeated' if key in found else 'unknown'} key {key!r} "
                               f"(keys: {', '.join(PREPROCESS_KEYS)}; or none, torchvision:NAME, timm:NAME, "
                               "hf:ID)")  # fmt: skip
            found[key] = []
        if key is None or not token:
            raise DlaError(f"--preprocess {text}: write key=value pairs, e.g. "
                           "resize=256,crop=224,mean=0.485,0.456,0.406,std=0.229,0.224,0.225; or none, "
                           "torchvision:NAME, timm:NAME, hf:ID")  # fmt: skip
        found[key].append(token)
    if "mean" not in found or "std" not in found:
        raise DlaError(f"--preprocess {text}: give mean=… and std=… (one value, or one per channel)")
    values: dict[str, Any] = {}
    for key in ("mean", "std"):
        try:
            values[key] = tuple(float(v) for v in found[key])
        except ValueError:
            raise DlaError(f"--preprocess {key}={','.join(found[key])}: not numbers") from None
        if len(values[key]) not in (1, 3) or not all(math.isfinite(v) for v in values[key]):
            raise DlaError(f"--preprocess {key}: one finite value, or three (one per RGB channel)")
    if len(values["mean"]) != len(values["std"]) or min(values["std"]) <= 0:
        raise DlaError("--preprocess: mean and std need as many values each, and std > 0")
    for key in ("resize", "crop", "interpolation"):
        if key in found and len(found[key]) != 1:
            raise DlaError(f"--preprocess {key}: one value, not {','.join(found[key])}")
    if "resize" in found:
        values["resize"] = _size("resize", found["resize"][0])
    if "crop" in found:
        crop = _size("crop", found["crop"][0])
        values["crop"] = (crop[0], crop[-1])
    if "interpolation" in found:
        if found["interpolation"][0] not in INTERPOLATIONS:
            raise DlaError(f"--preprocess interpolation: one of {', '.join(INTERPOLATIONS)}")
        values["interpolation"] = found["interpolation"][0]
    return PreprocessSpec(text, values=tuple(values.items()))


class ModelSpecType(click.ParamType):
    """A click type for ``--model``: checked by ``parse_model_spec`` (a bad spec: its one Error line, no usage
    text), kept as the text the user wrote."""

    name = "MODEL"
    example = "torchvision:resnet18"  # a value that parses (tests that walk every option pass it)

    def convert(self, value, param, ctx):
        return parse_model_spec(value, param.opts[0] if param is not None else "--model").text


MODEL = ModelSpecType()
MODEL_HELP = "Classifier: " + "; ".join(f"{f.form} ({f.summary})" for f in FAMILIES.values()) + "."


class WeightsType(click.ParamType):
    """``--weights``: pretrained, none, or a checkpoint file (its suffix and existence checked with the model,
    by ``check_weights``)."""

    name = "pretrained|none|FILE"
    example = "none"

    def convert(self, value, param, ctx):
        return str(value)


class PreprocessType(click.ParamType):
    """``--preprocess``: checked by ``parse_preprocess`` (a bad value: its one Error line), kept as written."""

    name = "PREPROCESS"
    example = "mean=0.5,std=0.25"

    def convert(self, value, param, ctx):
        return parse_preprocess(value).text


WEIGHTS_OPTION = click.option(
    "--weights",
    type=WeightsType(),
    default="pretrained",
    show_default=True,
    help="For torchvision:, timm: and hf: models: pretrained (the family's own weights, downloaded once by its "
    "own cache), none (the architecture with random weights, offline), or a checkpoint FILE of your own "
    f"({', '.join(CHECKPOINT_SUFFIXES)}: a state_dict, or a dict holding one under state_dict / model; a "
    "DataParallel 'module.' prefix is dropped), its class count read from its head; needs --preprocess.",
)
PREPROCESS_OPTION = click.option(
    "--preprocess",
    type=PreprocessType(),
    default=None,
    help="How the model's images are prepared from [0, 1] pixels, stated once: torchvision:NAME[:WEIGHTS], "
    "timm:NAME or hf:ID (that model's own transform), resize=S|HxW,crop=S|HxW,interpolation=bilinear,"
    "mean=M[,M,M],std=S[,S,S] (mean and std required), or none. [default: the family's own; none for "
    "TorchScript / torch.export files; required with --weights FILE]",
)
