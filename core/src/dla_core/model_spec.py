"""Where a classifier comes from: the one parser of every ``--model`` (no torch here, so ``--help`` stays light).

A spec is a dla run folder (``runs/c10``, as always), a model file, or ``FAMILY:NAME``::

    runs/c10                        a dla run folder (its model.safetensors), or that file
    torchvision:resnet18[:WEIGHTS]  torchvision.models; WEIGHTS an enum name (IMAGENET1K_V1) [default: DEFAULT]
    timm:NAME                       timm.create_model(NAME) (the timm extra)
    hf:ID_OR_FOLDER                 transformers' AutoModelForImageClassification (the hf extra)
    model.pt / model.ts             a TorchScript file (logits only)
    model.pt2                       a torch.export file (logits only)

An existing path is always a path (a folder named ``a:b`` stays a folder). ``--weights none`` builds the
architecture with random weights (offline; tests), and applies to the named families only.
``dla_core.adapters.load_classifier`` turns a spec into a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


FAMILIES = {
    f.name: f
    for f in (
        Family("run", "RUN_FOLDER", "a dla run folder (its model.safetensors)"),
        Family("torchvision", "torchvision:NAME[:WEIGHTS]", "torchvision.models", named=True),
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
WEIGHTS = ("pretrained", "none")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # a key of FAMILIES
    name: str  # the run folder / file, the model's name, the hub id or folder
    weights: str | None = None  # torchvision: the weights' enum name (None: DEFAULT)
    text: str = ""  # as the user wrote it

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
            return ModelSpec("torchvision", name, weights or None, text)
        return ModelSpec(prefix, rest, None, text)
    if path.is_dir() or (path.is_file() and path.suffix == ".safetensors"):  # a run folder or its model file:
        return ModelSpec("run", text, None, text)  # read (or missed) where the model loads, as always
    if path.is_file():
        return ModelSpec("export" if path.suffix == ".pt2" else "torchscript", text, None, text)
    forms = ", ".join(f.form for f in FAMILIES.values())
    raise DlaError(f"{option} {text}: no such folder or file, and not a model spec ({forms})")


def check_weights(spec: ModelSpec, weights: str) -> None:
    """``--weights none`` builds a named family's architecture with random weights; a file has its own."""
    if weights not in WEIGHTS:
        raise DlaError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    if weights == "none" and not FAMILIES[spec.family].named:
        raise DlaError(f"--weights none builds torchvision:, timm: or hf: models; {spec} has its own weights")
    if weights == "none" and spec.weights is not None:
        raise DlaError(f"--model {spec} names weights, and --weights none asks for random ones: choose one")


class ModelSpecType(click.ParamType):
    """A click type for ``--model``: checked by ``parse_model_spec`` (a bad spec: its one Error line, no usage
    text), kept as the text the user wrote."""

    name = "MODEL"
    example = "torchvision:resnet18"  # a value that parses (tests that walk every option pass it)

    def convert(self, value, param, ctx):
        return parse_model_spec(value, param.opts[0] if param is not None else "--model").text


MODEL = ModelSpecType()
MODEL_HELP = "Classifier: " + "; ".join(f"{f.form} ({f.summary})" for f in FAMILIES.values()) + "."
WEIGHTS_OPTION = click.option(
    "--weights",
    type=click.Choice(WEIGHTS),
    default="pretrained",
    show_default=True,
    help="For torchvision:, timm: and hf: models: their pretrained weights (downloaded once by the family's "
    "own cache), or none: the architecture with random weights, offline.",
)
