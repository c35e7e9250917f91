"""Classifiers from anywhere (dla_core.adapters, dla_core.model_spec), offline with random weights: each family's
logits and penultimate features equal its own forward, its preprocessing equals its own transform on the same
image, a logits-only file refuses features, and a bad spec is one Error line."""

from __future__ import annotations

import click
import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from dla_core.adapters import FeaturesUnavailable, load_classifier
from dla_core.errors import DlaError
from dla_core.model_spec import check_weights, parse_model_spec
from tests.tiny_models import save_tiny_hf_resnet, save_tiny_hf_vit


@pytest.fixture(autouse=True)
def no_grad():
    """Forward passes only (not a module-level switch: it would leak into the next file's tests)."""
    with torch.no_grad():
        yield


def images(n=2, c=3, h=40, w=48, seed=0):
    return torch.rand(
        n, c, h, w, generator=torch.Generator().manual_seed(seed)
    )  # [0, 1], not the model's size


#### The spec ####


def test_parse_model_spec_names_each_family_and_refuses_what_is_none(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"")
    (tmp_path / "m.pt2").write_bytes(b"")
    (tmp_path / "m.pt").write_bytes(b"")
    parsed = {
        "torchvision:resnet18": ("torchvision", "resnet18", None),
        "torchvision:resnet18:IMAGENET1K_V1": ("torchvision", "resnet18", "IMAGENET1K_V1"),
        "timm:vit_tiny_patch16_224.augreg_in21k": ("timm", "vit_tiny_patch16_224.augreg_in21k", None),
        "hf:google/vit-base-patch16-224": ("hf", "google/vit-base-patch16-224", None),
        str(run): ("run", str(run), None),
        str(run / "model.safetensors"): ("run", str(run / "model.safetensors"), None),  # the run's model file
        str(tmp_path / "m.pt2"): ("export", str(tmp_path / "m.pt2"), None),
        str(tmp_path / "m.pt"): ("torchscript", str(tmp_path / "m.pt"), None),
    }
    for text, want in parsed.items():
        s = parse_model_spec(text)
        assert (s.family, s.name, s.weights) == want and str(s) == text
    for bad, says in {
        "torchvision:": "give a name after 'torchvision:'",
        "torchvision:resnet18:A:B": "write torchvision:NAME[:WEIGHTS]",
        "nosuch:thing": "no such folder or file",
        str(tmp_path / "missing"): "no such folder or file",
    }.items():
        with pytest.raises(DlaError, match=says.replace("[", r"\[")):
            parse_model_spec(bad)
    with pytest.raises(DlaError, match="has its own weights"):
        check_weights(parse_model_spec(str(run)), "none")
    with pytest.raises(DlaError, match="choose one"):
        check_weights(parse_model_spec("torchvision:resnet18:IMAGENET1K_V1"), "none")
    check_weights(parse_model_spec("timm:resnet18"), "none")


def test_a_bad_spec_is_one_error_line_from_the_click_type():
    from dla_core.model_spec import MODEL

    @click.command()
    @click.option("--model", type=MODEL)
    def cmd(model):
        click.echo(model)

    r = CliRunner().invoke(cmd, ["--model", "torchvision:"])
    assert r.exit_code == 1 and r.output == (
        "Error: --model torchvision:: give a name after 'torchvision:' (torchvision:NAME[:WEIGHTS])\n"
    )
    r = CliRunner().invoke(cmd, ["--model", "timm:resnet18"])
    assert r.exit_code == 0 and r.output.strip() == "timm:resnet18"


#### torchvision ####


def test_torchvision_logits_features_and_preprocessing_are_its_own():
    import torchvision.models as tvm

    model = load_classifier("torchvision:resnet18", "none", num_classes=7)
    net = model.net
    x = images()
    own = tvm.ResNet18_Weights.DEFAULT.transforms()(x)  # the weights' own transform, on the same images
    assert own.shape == (2, 3, 224, 224)
    torch.testing.assert_close(model.prepare(x), own, rtol=0, atol=0)
    trunk = nn.Sequential(*list(net.children())[:-1])  # everything before fc
    f, logits = model.features_and_logits(x)
    torch.testing.assert_close(f, trunk(own).flatten(1))
    torch.testing.assert_close(logits, net(own))
    torch.testing.assert_close(model(x), net(own))
    assert model.head is net.fc and logits.shape == (2, 7)
    grey = images(c=1)  # grey images are repeated to RGB, as torchvision's Grayscale(3) would
    own_grey = tvm.ResNet18_Weights.DEFAULT.transforms()(grey.expand(-1, 3, -1, -1))
    torch.testing.assert_close(model.prepare(grey), own_grey, rtol=0, atol=0)


def test_torchvision_features_of_a_classifier_sequential_are_the_last_linear_input():
    model = load_classifier("torchvision:mobilenet_v3_small", "none", num_classes=5)
    net = model.net
    x = images(n=1)
    own = model.prepare(x)
    pooled = torch.flatten(net.avgpool(net.features(own)), 1)
    penultimate = net.classifier[:-1](pooled)  # Linear → Hardswish → Dropout, before the last Linear
    f, logits = model.features_and_logits(x)
    torch.testing.assert_close(f, penultimate)
    torch.testing.assert_close(logits, net(own))
    assert model.head is net.classifier[-1]


def test_a_replaced_head_sits_where_the_old_one_was_and_the_features_meet_it(hf_vit):
    """``replace_head`` (lab1 transfer): a fresh final layer for new classes, inside the family's own network (a
    Sequential's last entry, an attribute, a Hugging Face ``classifier``), the features still read at its input."""
    for spec, where in (("torchvision:mobilenet_v3_small", lambda net: net.classifier[-1]),
                        ("torchvision:resnet18", lambda net: net.fc), (f"hf:{hf_vit}", lambda net: net.classifier)):  # fmt: skip
        model = load_classifier(spec, "none")
        old = model.head
        x = images(n=2, h=32, w=32)
        before, _ = model.features_and_logits(x)
        new = model.replace_head(3)
        assert where(model.net) is new is model.head and new is not old and model.num_classes == 3
        assert new.in_features == old.in_features and not new.weight.equal(old.weight[:3])
        f, logits = model.features_and_logits(x)
        torch.testing.assert_close(f, before)  # the same features, now met by the new head
        torch.testing.assert_close(logits, new(f))
        torch.testing.assert_close(model(x), logits)


def test_torchvision_refuses_unknown_names_and_weights():
    with pytest.raises(DlaError, match="torchvision has no classifier 'resnet19'"):
        load_classifier("torchvision:resnet19", "none")
    with pytest.raises(DlaError, match="resnet18 has no weights NOSUCH"):
        load_classifier("torchvision:resnet18:NOSUCH")


#### timm ####


def test_timm_logits_features_and_preprocessing_are_its_own():
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    model = load_classifier("timm:resnet18", "none", num_classes=6)
    net = model.net
    assert isinstance(net, timm.models.ResNet)
    x = images()
    own = create_transform(**resolve_data_config({}, model=net))(x)  # timm's own eval transform (235 → 224)
    torch.testing.assert_close(model.prepare(x), own, rtol=0, atol=0)
    f, logits = model.features_and_logits(x)
    torch.testing.assert_close(f, net.forward_head(net.forward_features(own), pre_logits=True))
    torch.testing.assert_close(logits, net(own))
    torch.testing.assert_close(model(x), net(own))
    assert model.head is net.get_classifier()


#### Hugging Face ####


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    """A tiny random ViT saved as a model folder with its image processor (save_pretrained, offline)."""
    pytest.importorskip("transformers")
    return save_tiny_hf_vit(tmp_path_factory.mktemp("hf") / "tiny-vit")


def test_hf_logits_and_pooled_features_are_its_own(hf_vit):
    import transformers

    model = load_classifier(f"hf:{hf_vit}")
    net = transformers.AutoModelForImageClassification.from_pretrained(hf_vit).eval()
    x = images(h=32, w=32)
    own = model.prepare(x)
    out = net(pixel_values=own, output_hidden_states=True)
    pooled = net.vit.layernorm(out.hidden_states[-1])[:, 0]  # the [CLS] token after the last layer norm
    f, logits = model.features_and_logits(x)
    torch.testing.assert_close(f, pooled)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(model(x), out.logits)
    assert model.head is model.net.classifier and model.num_classes == 4


def test_hf_preprocessing_is_its_image_processor(hf_vit):
    import transformers

    model = load_classifier(f"hf:{hf_vit}")
    processor = transformers.AutoImageProcessor.from_pretrained(hf_vit)
    rng = np.random.default_rng(0)
    for h, w in ((32, 32), (20, 28)):  # its own size: normalisation only; another: resized (bilinear, squash)
        u8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        own = processor(images=[u8], return_tensors="pt")["pixel_values"]
        ours = model.prepare(torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255)
        tol = 1e-5 if (h, w) == (32, 32) else 0.05  # its resize rounds to uint8 on the way
        torch.testing.assert_close(ours, own, rtol=0, atol=tol)


def test_hf_weights_none_builds_its_config_with_the_data_classes(hf_vit):
    model = load_classifier(f"hf:{hf_vit}", "none", num_classes=9)
    assert model(images(n=1, h=32, w=32)).shape == (1, 9) and model.description["weights"] == "none"


#### Files: logits only ####


def test_torchscript_and_export_files_give_logits_and_refuse_features(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    x = images(h=8, w=8)
    torch.jit.save(torch.jit.script(net), tmp_path / "m.pt")
    torch.export.save(torch.export.export(net, (x,)), tmp_path / "m.pt2")
    for name in ("m.pt", "m.pt2"):
        model = load_classifier(tmp_path / name)
        torch.testing.assert_close(model(x), net(x))
        assert not model.has_features and model.description["preprocessing"] is None
        with pytest.raises(FeaturesUnavailable, match="gives logits only"):
            model.features(x)
        with pytest.raises(FeaturesUnavailable, match=r"gives logits only .* needs its final linear layer"):
            model.head  # noqa: B018
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DlaError, match="is not a TorchScript file"):
        load_classifier(tmp_path / "junk.pt")


def test_a_missing_extra_is_one_error_naming_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "timm", None)  # import timm now fails, as when absent
    with pytest.raises(DlaError, match=r"needs timm: pip install 'dla-core\[timm\]'"):
        load_classifier("timm:resnet18", "none")


def test_hf_resnet_shortest_edge_crop_pct_and_pooled_features(tmp_path):
    """A ConvNeXt-style processor (shortest_edge / crop_pct, then a centre crop) and a classifier that is
    Sequential(Flatten, Linear): the features are the flattened pooled output."""
    transformers = pytest.importorskip("transformers")
    save_tiny_hf_resnet(tmp_path)
    model = load_classifier(f"hf:{tmp_path}")
    assert model.preprocessing.resize == (36,) and model.preprocessing.crop == (32, 32)
    u8 = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(2, 0, 1)[None].float() / 255
    own = transformers.AutoImageProcessor.from_pretrained(tmp_path)(images=[u8], return_tensors="pt")[
        "pixel_values"
    ]
    ours = model.prepare(x)
    assert ours.shape == own.shape == (1, 3, 32, 32)
    # PIL's bicubic on uint8 against torch's on floats: a few pixels differ by ~0.1, a wrong resize or crop by ~1
    assert float((ours - own).abs().mean()) < 0.01
    out = model.net(pixel_values=model.prepare(x))
    f, logits = model.features_and_logits(x)
    torch.testing.assert_close(f, model.net.resnet(model.prepare(x)).pooler_output.flatten(1))
    torch.testing.assert_close(logits, out.logits)
    assert model.head is model.net.classifier[-1]
