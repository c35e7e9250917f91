"""Strategies, LoRA (targets per architecture, frozen base, merge), and label mapping."""

from __future__ import annotations

import pytest
import torch

from dla_core.engine import TrainConfig, fit, make_accelerator
from dla_core.errors import DlaError
from lab2_distilbert import models
from lab2_distilbert.data import DataConfig, load_text_splits
from lab2_distilbert.tokens import TokenBatches, encode

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)  # inside PEFT


def test_strategies_choose_what_trains(tiny_distilbert, tiny_bert):
    m = models.load_classifier(str(tiny_distilbert), ["neg", "pos"])
    models.apply_strategy(m, "head")
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {
        "pre_classifier.weight",
        "pre_classifier.bias",
        "classifier.weight",
        "classifier.bias",
    }
    models.apply_strategy(m, "head+last")
    trainable = {
        n.split(".")[0] + "." + ".".join(n.split(".")[2:4])
        for n, p in m.named_parameters()
        if p.requires_grad
    }
    assert "distilbert.layer.1" in trainable and "distilbert.layer.0" not in trainable
    models.apply_strategy(m, "full")
    assert models.count_params(m)[0] == models.count_params(m)[1]
    b = models.load_classifier(str(tiny_bert), ["neg", "pos"])
    models.apply_strategy(b, "head+last")
    names = [n for n, p in b.named_parameters() if p.requires_grad]
    assert any(n.startswith("bert.encoder.layer.1.") for n in names) and any("pooler" in n for n in names)
    assert not any(n.startswith("bert.encoder.layer.0.") or "embeddings" in n for n in names)


@pytest.mark.parametrize(
    ("fixture", "roles", "expected"),
    [
        ("tiny_distilbert", ["q", "v"], {"q_lin", "v_lin"}),
        ("tiny_distilbert", ["k", "o", "ffn"], {"k_lin", "out_lin", "lin1", "lin2"}),
        ("tiny_bert", ["q", "k", "v"], {"query", "key", "value"}),
        ("tiny_bert", ["o", "ffn"], {"attention.output.dense", "intermediate.dense", "output.dense"}),
    ],
)
def test_lora_targets_are_mapped_per_architecture(request, fixture, roles, expected):
    model = models.add_lora(
        models.load_classifier(str(request.getfixturevalue(fixture)), ["a", "b"]), 4, 8, roles
    )
    adapted = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n}
    layers = 2
    suffixes = {".".join(n.split(".")[-2:]) if n.endswith("dense") else n.split(".")[-1] for n in adapted}
    if fixture == "tiny_bert" and "o" in roles:  # layer.N.output.dense vs attention.output.dense
        suffixes = {"attention.output.dense" if "attention.output" in n else n.split("layer.")[1].split(".", 1)[1]
                    for n in adapted}  # fmt: skip
    assert suffixes == expected and len(adapted) == layers * len(expected)


def test_unknown_lora_role_or_architecture_is_an_error():
    with pytest.raises(DlaError, match="unknown role x"):
        models.lora_target_regex("distilbert", ["q", "x"])
    with pytest.raises(DlaError, match="no LoRA target names for model type 'gpt2'"):
        models.lora_target_regex("gpt2", ["q"])


def test_lora_trains_only_adapters_and_head_and_merges_exactly(tiny_distilbert, text_data, tmp_path):
    tok = models.load_tokenizer(str(tiny_distilbert))
    splits = load_text_splits(DataConfig(source=str(text_data)))
    base = models.load_classifier(str(tiny_distilbert), splits.label_names)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = models.add_lora(base, 4, 8, ["q", "v"], dropout=0.0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n or "classifier" in n for n in trainable)
    assert any("pre_classifier" in n for n in trainable)  # PEFT's modules_to_save matches it by suffix
    batches = TokenBatches(encode(tok, splits.train, 32), 32, pad_id=0, shuffle=True)
    fit(
        model,
        batches,
        TrainConfig(epochs=2, lr=1e-2, optimizer="adamw"),
        step=models.classification_step,
        accelerator=make_accelerator("no", cpu=True),
    )
    for n, p in model.named_parameters():
        if ".lora_" in n or "modules_to_save" in n:
            continue
        key = n.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(p.detach().cpu(), before[key]), n  # base weights untouched
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)  # adapters moved

    model.eval()
    x = next(iter(TokenBatches(encode(tok, splits.test, 32), 40, pad_id=0).iterate(0)))
    inputs = {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}
    with torch.no_grad():
        adapted = model(**inputs).logits
        model.save_pretrained(tmp_path / "adapter")
        merged = model.merge_and_unload().eval()
        assert not any(".lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(merged(**inputs).logits, adapted, rtol=1e-4, atol=1e-5)


def test_label_mapping_by_name_or_index():
    assert models.label_mapping({0: "NEGATIVE", 1: "POSITIVE"}, ["neg", "pos"]) == [0, 1]
    assert models.label_mapping({0: "POSITIVE", 1: "NEGATIVE"}, ["neg", "pos"]) == [1, 0]
    assert models.label_mapping({0: "LABEL_0", 1: "LABEL_1"}, ["neg", "pos"]) == [0, 1]
    with pytest.raises(DlaError, match="cannot match the model's label 'joy'"):
        models.label_mapping({0: "joy", 1: "anger"}, ["neg", "pos"])
    with pytest.raises(DlaError, match="the model has 3 classes"):
        models.label_mapping({0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, ["neg", "pos"])


def test_mapped_step_scores_in_data_label_order():
    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": torch.tensor([[2.0, 0.0], [0.0, 2.0]])})()

    step = models.MappedStep([1, 0])  # model class 0 means data class 1
    out = step(Fixed(), {"input_ids": None, "attention_mask": None, "labels": torch.tensor([1, 0])})
    assert out.correct.sum().item() == 2 and out.loss.item() == pytest.approx(
        torch.log1p(torch.exp(torch.tensor(-2.0))).item()
    )
