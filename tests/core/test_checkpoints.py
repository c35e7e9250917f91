"""Your own weights and preprocessing (``--weights FILE``, ``--preprocess``; dla_core.adapters, model_spec),
offline with random weights: a checkpoint loads onto its architecture in every usual wrapping and gives the
original model's logits, its class count read from its head; one that does not fit is one Error line naming the
keys and shapes; a TorchScript file with a stated preprocessing equals the file on the family's transform."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn as nn
import torchvision

from dla_core.adapters import cifar_stem, load_classifier
from dla_core.errors import DlaError
from dla_core.model_spec import check_weights, parse_model_spec, parse_preprocess

CIFAR = "mean=0.4914,0.4822,0.4465,std=0.2470,0.2435,0.2616"
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


def images(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def resnet18(classes=10, stem=False, seed=0):
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=classes)
    return (cifar_stem(net) if stem else net).eval()


#### --weights FILE ####


@pytest.mark.parametrize("wrapping", ["plain", "module.", "state_dict", "safetensors"])
def test_a_checkpoint_loads_in_every_usual_wrapping_and_gives_the_original_logits(tmp_path, wrapping):
    net = resnet18()
    state = net.state_dict()
    path = tmp_path / ("ck.safetensors" if wrapping == "safetensors" else "ck.pth")
    if wrapping == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif wrapping == "module.":  # DataParallel / DDP
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrapping == "state_dict":  # a training script's dict
        torch.save({"epoch": 99, "best_acc": 0.95, "state_dict": state}, path)
    else:
        torch.save(state, path)
    model = load_classifier("torchvision:resnet18", str(path), preprocess=CIFAR)
    x = images()
    assert model.num_classes == 10 and model.head.out_features == 10  # from the checkpoint, not ImageNet's
    torch.testing.assert_close(model(x), net((x - MEAN) / STD))
    features, logits = model.features_and_logits(x)
    torch.testing.assert_close(logits, net((x - MEAN) / STD))
    assert features.shape == (2, 512)
    d = model.description
    assert d["weights"] == "checkpoint" and d["preprocess"] == CIFAR and "transform_of" not in d
    assert d["checkpoint"]["path"] == str(path.resolve())
    assert d["checkpoint"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert d["preprocessing"]["resize"] == () and d["preprocessing"]["mean"] == (0.4914, 0.4822, 0.4465)


def test_the_cifar_stem_is_declared_and_a_stem_mismatch_is_one_line_naming_it(tmp_path):
    net = resnet18(stem=True)
    torch.save(net.state_dict(), tmp_path / "stem.pth")
    with pytest.raises(DlaError) as caught:
        load_classifier("torchvision:resnet18", str(tmp_path / "stem.pth"), preprocess=CIFAR)
    assert str(caught.value) == (
        f"--weights {tmp_path / 'stem.pth'} does not fit torchvision:resnet18: shapes differ (checkpoint vs "
        "model): conv1.weight (64, 3, 3, 3) vs (64, 3, 7, 7) — a CIFAR stem (3×3 conv1)? try --model "
        "torchvision:resnet18+cifar-stem"
    )
    model = load_classifier("torchvision:resnet18+cifar-stem", str(tmp_path / "stem.pth"), preprocess=CIFAR)
    assert isinstance(model.net.maxpool, nn.Identity) and model.net.conv1.kernel_size == (3, 3)
    assert model.net.conv1.stride == (1, 1) and model.description["stem"].startswith("cifar")
    x = images()
    torch.testing.assert_close(model(x), net((x - MEAN) / STD))
    random = load_classifier("torchvision:resnet18+cifar-stem", "none", num_classes=4)
    assert random(x).shape == (2, 4) and random.net.conv1.kernel_size == (3, 3)


def test_other_key_names_are_one_line_with_the_first_few_of_each(tmp_path):
    state = resnet18().state_dict()
    torch.save({k.replace("fc.", "linear."): v for k, v in state.items()}, tmp_path / "head.pt")
    with pytest.raises(DlaError) as caught:
        load_classifier("torchvision:resnet18", str(tmp_path / "head.pt"), preprocess=CIFAR)
    assert str(caught.value).endswith(
        "does not fit torchvision:resnet18: missing from the checkpoint: fc.weight, fc.bias; not in the model: "
        "linear.weight, linear.bias"
    )
    torch.save({k.replace("downsample", "shortcut"): v for k, v in state.items()}, tmp_path / "blocks.pt")
    with pytest.raises(DlaError) as caught:
        load_classifier("torchvision:resnet18", str(tmp_path / "blocks.pt"), preprocess=CIFAR)
    line = str(caught.value)
    assert "\n" not in line
    assert "missing from the checkpoint: layer2.0.downsample.0.weight, layer2.0.downsample.1.weight, " in line
    assert "layer2.0.downsample.1.bias (+12 more); not in the model: layer2.0.shortcut.0.weight, " in line


def test_unreadable_and_unsafe_checkpoints_are_one_line(tmp_path):
    torch.save(resnet18(), tmp_path / "whole.pt")  # a pickled module: not loaded (weights_only)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "nostate.pth")
    for name, says in (("whole.pt", "not a checkpoint dla can read safely"),
                       ("junk.pth", "not a checkpoint dla can read safely"),
                       ("nostate.pth", "holds no state_dict (found epoch, optimizer")):  # fmt: skip
        with pytest.raises(DlaError, match=says.replace("(", r"\(")) as caught:
            load_classifier("torchvision:resnet18", str(tmp_path / name), preprocess="none")
        assert "\n" not in str(caught.value)


def test_a_timm_checkpoint_and_its_own_preprocessing(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    from safetensors.torch import save_file

    save_file(net.state_dict(), tmp_path / "t.safetensors")
    model = load_classifier("timm:resnet18", str(tmp_path / "t.safetensors"), preprocess="timm:resnet18")
    from timm.data import create_transform, resolve_data_config

    x = images(size=40)
    own = create_transform(**resolve_data_config({}, model=net))(x)
    assert model.num_classes == 3
    torch.testing.assert_close(model(x), net(own))


def test_an_hf_checkpoint_on_its_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=4)  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "base")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "base")
    torch.manual_seed(2)
    tuned = transformers.ViTForImageClassification(
        transformers.ViTConfig(**{**config.to_dict(), "num_labels": 6})
    ).eval()  # fine-tuned to 6 classes: the checkpoint's head decides
    torch.save(tuned.state_dict(), tmp_path / "tuned.pth")
    spec = f"hf:{tmp_path / 'base'}"
    model = load_classifier(spec, str(tmp_path / "tuned.pth"), preprocess=spec)
    x = images()
    assert model.num_classes == 6
    torch.testing.assert_close(model(x), tuned(pixel_values=model.prepare(x)).logits)


#### --preprocess ####


def test_a_torchscript_file_with_a_borrowed_or_stated_preprocessing(tmp_path):
    net = resnet18(classes=5)
    torch.jit.save(torch.jit.script(net), tmp_path / "m.pt")
    x = images(size=40)
    model = load_classifier(tmp_path / "m.pt", preprocess="torchvision:resnet18")
    own = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(x)  # the family's own transform
    torch.testing.assert_close(model(x), net(own))
    assert model.description["preprocess"] == "torchvision:resnet18"
    assert model.description["preprocessing"]["crop"] == (224, 224)
    stated = load_classifier(tmp_path / "m.pt", preprocess=f"resize=36,crop=32,{CIFAR}")
    import torchvision.transforms.functional as TF

    want = (TF.center_crop(TF.resize(x, [36], antialias=True), [32, 32]) - MEAN) / STD
    torch.testing.assert_close(stated(x), net(want))
    assert load_classifier(tmp_path / "m.pt", preprocess="none").preprocessing is None


def test_parse_preprocess_reads_every_form_and_refuses_in_one_line():
    p = parse_preprocess("resize=256,crop=224,interpolation=bicubic,mean=0.5,std=0.25")
    assert dict(p.values) == {"mean": (0.5,), "std": (0.25,), "resize": (256,), "crop": (224, 224),
                              "interpolation": "bicubic"}  # fmt: skip
    assert dict(parse_preprocess("resize=20x30,mean=0,0,0,std=1,1,1").values)["resize"] == (20, 30)
    assert parse_preprocess("none").none
    assert parse_preprocess("torchvision:resnet50:IMAGENET1K_V2").borrow.weights == "IMAGENET1K_V2"
    for bad, says in {
        "resize=224": "give mean=… and std=…",
        "mean=0.5,std=0": "std > 0",
        "mean=0.5,0.4,std=1,1": "one finite value, or three",
        "mean=a,std=1": "not numbers",
        "size=3,mean=1,std=1": "unknown key 'size'",
        "mean=1,std=1,mean=2": "repeated key 'mean'",
        "resize=2x3x4,mean=1,std=1": "a size is S",
        "interpolation=lanczos,mean=1,std=1": "one of nearest, bilinear, bicubic",
        "0.5,0.5": "write key=value pairs",
        "torchvision:resnet18+cifar-stem": "without +cifar-stem",
    }.items():
        with pytest.raises(DlaError, match=says.replace("+", r"\+")):
            parse_preprocess(bad)


def test_check_weights_refuses_before_anything_loads(tmp_path):
    ck = tmp_path / "ck.pth"
    ck.write_bytes(b"")  # only its name and existence are read here
    run = tmp_path / "run"
    run.mkdir()
    tv = parse_model_spec("torchvision:resnet18")
    check_weights(tv, str(ck), "none")
    for spec, weights, preprocess, says in (
        (tv, str(ck), None, "say how the checkpoint's images were prepared"),
        (tv, str(tmp_path / "nope.pth"), "none", "no such checkpoint file"),
        (tv, str(tmp_path / "ck.txt"), "none", "must be pretrained, none or a checkpoint file"),
        (parse_model_spec(str(run)), str(ck), "none", "has its own weights"),
        (parse_model_spec("torchvision:resnet18:IMAGENET1K_V1"), str(ck), "none", "choose one"),
        (parse_model_spec("torchvision:resnet18+cifar-stem"), "pretrained", None, "no pretrained weights"),
        (parse_model_spec(str(run)), "pretrained", "none", "normalises its images itself"),
    ):
        with pytest.raises(DlaError, match=says):
            check_weights(spec, weights, preprocess)
    for bad, says in (("torchvision:vgg11+cifar-stem", "a variant of torchvision's ResNets"),
                      ("torchvision:resnet18+cifar-stem:IMAGENET1K_V1", "no pretrained weights"),
                      ("torchvision:resnet18+other", r"the only \+ form")):  # fmt: skip
        with pytest.raises(DlaError, match=says):
            parse_model_spec(bad)
