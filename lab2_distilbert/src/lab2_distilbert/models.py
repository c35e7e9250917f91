"""Hugging Face encoders: loading, which parameters train (strategies, LoRA targets), steps, label mapping."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dla_core.engine import StepOutput
from dla_core.errors import DlaError
from dla_core.hub import check_source
from lab2_distilbert.choices import ALL_LINEAR, LORA_ROLES, STRATEGIES

log = logging.getLogger(__name__)

# Module-name suffixes (regex) of each role, per architecture; PEFT has no DistilBERT defaults.
LORA_MODULES = {
    "distilbert": {"q": "q_lin", "k": "k_lin", "v": "v_lin", "o": "out_lin", "ffn": r"lin1|lin2"},
    "bert": {
        "q": "query",
        "k": "key",
        "v": "value",
        "o": r"attention\.output\.dense",
        "ffn": r"intermediate\.dense|\d+\.output\.dense",
    },
}
LORA_MODULES["roberta"] = LORA_MODULES["electra"] = LORA_MODULES["bert"]


#### Loading ####


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    check_source(name)
    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise _load_error("a tokenizer", name, e) from None


def load_classifier(name: str, label_names: list[str] | None = None):
    """A sequence classifier from a hub name or folder; with ``label_names``, a fresh head of that size."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if label_names is not None:
        kwargs = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {n: i for i, n in enumerate(label_names)},
        }
    check_source(name)
    try:
        return AutoModelForSequenceClassification.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error("a sequence classifier", name, e) from None


def load_encoder(name: str) -> nn.Module:
    from transformers import AutoModel

    check_source(name)
    try:
        return AutoModel.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise _load_error("an encoder", name, e) from None


def _load_error(what: str, name: str, e: Exception) -> DlaError:
    # "runs/lab2-full" is a hub id in form too: say that no such folder exists either
    where = " (no local folder of that name either)" if "/" in name and not Path(name).exists() else ""
    return DlaError(f"cannot load {what} from {name!r}{where}: {_first_line(e)}")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


#### What trains ####


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of the model's encoder (the longest ModuleList inside ``base_model``)."""
    lists = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise DlaError(f"cannot find the transformer layers of {type(model).__name__}")
    return max(lists, key=len)


def apply_strategy(model: nn.Module, strategy: str) -> None:
    """full: everything trains; head: only what sits outside the pretrained encoder; head+last: also its
    last transformer block (and, for BERT-like models, the pooler)."""
    if strategy not in STRATEGIES:
        raise DlaError(f"unknown --strategy {strategy!r} (choose {', '.join(STRATEGIES)})")
    if strategy == "full":
        model.requires_grad_(True)
        return
    model.requires_grad_(True)
    model.base_model.requires_grad_(False)
    if strategy == "head+last":
        encoder_layers(model)[-1].requires_grad_(True)
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters."""
    total = sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad), total


def lora_target_regex(model_type: str, roles: list[str]) -> str:
    """PEFT target_modules (a regex matched against full module names) for roles like q, v, ffn; ``all-linear``
    stands for every role: each linear layer of the transformer blocks. (PEFT's own "all-linear" would also adapt
    DistilBERT's pre_classifier, which PEFT trains whole as part of the head, and fails on it.)"""
    if ALL_LINEAR in roles:
        roles = [*LORA_ROLES, *(r for r in roles if r != ALL_LINEAR and r not in LORA_ROLES)]
    table = LORA_MODULES.get(model_type)
    if table is None:
        raise DlaError(
            f"no LoRA target names for model type {model_type!r} (known: {', '.join(sorted(LORA_MODULES))})"
        )
    bad = [r for r in roles if r not in table]
    if bad:
        raise DlaError(f"--targets: unknown role {', '.join(bad)} (choose from {', '.join(LORA_ROLES)})")
    return rf".*\.({'|'.join(table[r] for r in roles)})$"


def add_lora(
    model: nn.Module,
    rank: int,
    alpha: float,
    roles: list[str],
    dropout: float = 0.1,
    *,
    dora: bool = False,
    rslora: bool = False,
):
    """Wrap ``model`` with LoRA adapters; base weights are frozen, adapters and the head train.

    ``dora``: PEFT's ``use_dora`` (DoRA: each adapted weight also learns a per-output-row magnitude);
    ``rslora``: PEFT's ``use_rslora`` (updates scaled by α / √r instead of α / r)."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(model.config.model_type, roles),
        use_dora=dora,
        use_rslora=rslora,
    )
    return get_peft_model(model, config)


def load_any_classifier(source: str):
    """A classifier from a hub name, a model folder, a PEFT adapter folder, or a lab2 run folder."""
    path = Path(source)
    if (path / "config.json").exists() and "command" in _json(path / "config.json"):  # a lab2 run folder
        for sub in ("merged", "model", "adapter"):
            if (path / sub).is_dir():
                return load_any_classifier(str(path / sub))
        raise DlaError(f"{path} is a run folder without a model (no model/, merged/ or adapter/ inside)")
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        base_name = _json(path / "adapter_config.json").get("base_model_name_or_path")
        head = _json(path / "adapter_labels.json") if (path / "adapter_labels.json").exists() else None
        base = load_classifier(base_name, head)
        return PeftModel.from_pretrained(base, str(path)).eval(), str(path)
    return load_classifier(source).eval(), source


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DlaError(f"cannot read {path}: {e}") from None


#### Steps ####


def classification_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    y = batch["labels"]
    return StepOutput(F.cross_entropy(logits, y), len(y), logits.argmax(1) == y)


class MappedStep:
    """Evaluate a classifier whose classes are named differently (``model_to_data[c]``: data class of c)."""

    def __init__(self, model_to_data: list[int], collect: bool = False):
        self.model_to_data = torch.tensor(model_to_data)
        self.collect = collect
        self.scores: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        m2d = self.model_to_data.to(logits.device)
        # log-probability of each data class: logsumexp over the model classes mapped to it
        logp = logits.log_softmax(1)
        n_data = int(m2d.max()) + 1
        data_logp = torch.full((len(logits), n_data), float("-inf"), device=logits.device)
        data_logp = data_logp.scatter_reduce(1, m2d.expand(len(logits), -1), logp, reduce="amax")
        y = batch["labels"]
        if self.collect:
            self.scores.append(data_logp.exp().cpu())
            self.labels.append(y.cpu())
        return StepOutput(F.nll_loss(data_logp, y), len(y), data_logp.argmax(1) == y)


def label_mapping(id2label: dict, data_names: list[str]) -> list[int]:
    """For each model class, the data class it means: by name (``NEGATIVE`` ↔ ``neg``), or by index when
    either side has only generic names (``LABEL_0``, ``0``) and the counts agree."""
    model_names = [str(id2label[i]) for i in sorted(id2label, key=int)]

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9]", "", s.lower())

    def generic(names: list[str]) -> bool:
        return all(re.fullmatch(r"(label_?)?\d+", norm(n)) for n in names)

    if generic(model_names) or generic(data_names):
        if len(model_names) != len(data_names):
            raise DlaError(
                f"the model has {len(model_names)} classes ({', '.join(model_names)}) "
                f"but the data has {len(data_names)} ({', '.join(data_names)})"
            )
        return list(range(len(model_names)))
    mapping = []
    for m in model_names:
        hits = [
            i for i, d in enumerate(data_names) if norm(m).startswith(norm(d)) or norm(d).startswith(norm(m))
        ]
        if len(hits) != 1:
            raise DlaError(
                f"cannot match the model's label {m!r} to the data's labels ({', '.join(data_names)}); "
                f"the model's labels are {', '.join(model_names)}"
            )
        mapping.append(hits[0])
    missing = set(range(len(data_names))) - set(mapping)
    if missing:
        raise DlaError(
            f"no model label for data label(s) {', '.join(data_names[i] for i in sorted(missing))} "
            f"(the model's labels are {', '.join(model_names)})"
        )
    return mapping
