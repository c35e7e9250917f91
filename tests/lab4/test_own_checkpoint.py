"""Your own model in `lab4` (issue 25's "done when"): `lab4 benchmark --suite openood-cifar10 --model
torchvision:resnet18 --weights CKPT --preprocess …` on fixtures in the real formats, the same on image folders,
every command of the README's "Your own model" section run as written (with --cpu --limit), a checkpoint that
does not fit refused in one line with nothing on disk, every missing set of a suite named at once, and a bad
DLA_DATA_STREAM refused by commands that never read image files."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import torchvision
from click.testing import CliRunner

from dla_core.adapters import cifar_stem
from dla_core.errors import DlaError
from lab4_ood.cli import group
from tests.lab4.test_byo_models import png_folder
from tests.lab4.test_suites import suite_data  # noqa: F401  (a fixture: the suite's datasets in their formats)

ROOT = Path(__file__).parents[2]
CIFAR = "mean=0.4914,0.4822,0.4465,std=0.2470,0.2435,0.2616"
SEVEN = ("cifar10", "cifar100", "tiny-imagenet", "mnist", "svhn", "dtd", "places365")


def lab4(*args):
    return CliRunner().invoke(group, [str(a) for a in args])


def resnet18(classes, stem=False, seed=0):
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=classes)
    return (cifar_stem(net) if stem else net).eval()


@pytest.mark.slow
def test_the_done_when_command_scores_your_cifar10_resnet18_with_its_own_weights(suite_data, tmp_path):  # noqa: F811
    net = resnet18(10)
    ckpt = tmp_path / "resnet18_cifar10.pth"
    torch.save({"epoch": 100, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    out = tmp_path / "bench"
    r = lab4("benchmark", "--suite", "openood-cifar10", "--model", "torchvision:resnet18", "--weights", ckpt,
             "--preprocess", CIFAR, "--methods", "msp,energy", "--data-dir", suite_data, "--cpu",
             "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["groups"] == {
        "near": ["cifar100", "tiny-imagenet"],
        "far": ["mnist", "svhn", "dtd", "places365"],
    }
    scored = m["models"]["torchvision-resnet18"]
    # the checkpoint's weights, the stated preprocessing: the ID accuracy is the original network's
    from dla_core.data import load_splits

    test = load_splits("cifar10", suite_data).test
    x = test.images.float() / 255
    mean, std = (
        torch.tensor(v).view(1, 3, 1, 1) for v in ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
    )
    with torch.no_grad():
        own = float((net((x - mean) / std).argmax(1) == test.labels).float().mean())
    assert scored["id_accuracy"] == pytest.approx(own, abs=1e-6)
    saved = json.loads((out / "torchvision-resnet18" / "detect" / "config.json").read_text())["config"]
    source = saved["model_source"]
    assert saved["weights"] == str(ckpt) and saved["preprocess"] == CIFAR
    assert source["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert source["checkpoint"]["path"] == str(ckpt.resolve()) and source["preprocessing"]["resize"] == []
    assert f"then --preprocess {CIFAR}." in (out / "table.md").read_text()  # what differs from OpenOOD's
    bench = json.loads((out / "config.json").read_text())["config"]
    assert bench["weights"] == str(ckpt) and bench["preprocess"] == CIFAR


def test_a_checkpoint_that_does_not_fit_is_one_line_and_nothing_on_disk(data_dir, tmp_path):
    torch.save(resnet18(10, stem=True).state_dict(), tmp_path / "stem.pth")
    torch.save(resnet18(5).state_dict(), tmp_path / "five.pth")
    out = tmp_path / "refused"
    for ckpt, says in (
        ("stem.pth", "does not fit torchvision:resnet18: shapes differ (checkpoint vs model): conv1.weight "
                     "(64, 3, 3, 3) vs (64, 3, 7, 7) — a CIFAR stem (3×3 conv1)? try --model "
                     "torchvision:resnet18+cifar-stem"),
        ("five.pth", f"torchvision:resnet18 has 5 classes (its checkpoint {tmp_path / 'five.pth'}) but cifar10 "
                     "has 10: give --weights CHECKPOINT trained on these classes"),
    ):  # fmt: skip
        for command in (("benchmark", "--near", "cifar100"), ("detect", "--ood", "cifar100")):
            r = lab4(*command, "--model", "torchvision:resnet18", "--weights", tmp_path / ckpt, "--preprocess",
                     CIFAR, "--id", "cifar10", "--data-dir", data_dir, "--cpu", "--out", out)  # fmt: skip
            assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
            assert r.output.startswith("Error: ") and says in r.output, r.output
            assert not out.exists()
    r = lab4("detect", "--model", "torchvision:resnet18", "--weights", tmp_path / "five.pth", "--id", "cifar10",
             "--ood", "fake", "--data-dir", data_dir, "--cpu", "--out", out)  # fmt: skip
    assert r.output.startswith("Error: --weights ") and "--preprocess" in r.output and not out.exists()


def test_pretrained_weights_with_other_classes_are_refused_in_one_line(digits04):
    from dla_core.adapters import load_classifier
    from lab4_ood.datasets import check_model_fits

    model = load_classifier("torchvision:resnet18", "none")  # ImageNet's 1000 classes, as the pretrained head
    model.description["weights"] = "IMAGENET1K_V1"
    with pytest.raises(DlaError) as caught:
        check_model_fits(model, digits04.test)
    assert str(caught.value) == (
        "torchvision:resnet18 has 1000 classes (its IMAGENET1K_V1 weights) but digits:0-4 has 5: give --weights "
        "CHECKPOINT trained on these classes (or --weights none for a random head)"
    )


def test_an_empty_data_dir_names_all_seven_sets_of_the_suite(tmp_path):
    out = tmp_path / "refused"
    (tmp_path / "empty").mkdir()
    r = lab4("benchmark", "--suite", "openood-cifar10", "--model", "torchvision:resnet18", "--weights", "none",
             "--methods", "msp", "--data-dir", tmp_path / "empty", "--cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith("Error: --suite openood-cifar10: 7 set(s) missing or unreadable: "), r.output
    for name in SEVEN:
        assert f"{name} not found in {tmp_path / 'empty'}" in r.output, name
    assert not out.exists()


def test_a_bad_data_stream_setting_is_refused_where_no_file_is_read(digits_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DLA_DATA_STREAM", "yes")
    for args in (("detect", "--model", digits_run, "--ood", "fake"),
                 ("attack", "--model", digits_run, "--method", "fgsm"),
                 ("train", "--dataset", "digits:0-4", "--model", "mlp", "--epochs", "1")):  # fmt: skip
        r = lab4(*args, "--cpu", "--out", tmp_path / "o")
        assert r.exit_code == 1 and r.output == (
            "Error: DLA_DATA_STREAM='yes': expected auto, always or never\n"
        ), r.output
        assert not (tmp_path / "o").exists()


#### The README's "Your own model" section, run as written ####


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Your own model") :]
    block = section[
        section.index("```bash") + len("```bash") : section.index("```\n", section.index("```bash") + 7)
    ]
    joined = block.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("lab4 ")]


def test_the_readme_section_holds_the_done_when_commands():
    commands = readme_commands()
    assert len(commands) == 7
    assert commands[0].startswith(
        "lab4 benchmark --suite openood-cifar10 --model torchvision:resnet18 --weights "
    )
    assert any("--id imagefolder:" in c and "--group" in c for c in commands)  # the same on image folders
    families = {re.search(r"--model (\S+?)[:.]", c).group(1) for c in commands}
    assert families >= {"torchvision", "timm", "hf", "classifier"}  # classifier.pt / .pt2: the two files


@pytest.fixture(scope="module")
def readme_world(suite_data, tmp_path_factory):  # noqa: F811
    """A folder holding every file the README's commands name: data/, image folders, checkpoints, model files."""
    import shutil

    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(suite_data, root / "data")
    png_folder(root / "my-images", classes=range(5), per_class=20)
    png_folder(root / "my-near-ood", classes=range(5, 7), per_class=3)
    png_folder(root / "my-far-ood", classes=range(7, 10), per_class=3)
    torch.save(resnet18(10).state_dict(), root / "resnet18_cifar10.pth")
    torch.save({"model": resnet18(10, stem=True).state_dict()}, root / "resnet18_cifar10_stem.pth")
    torch.save(resnet18(5).state_dict(), root / "resnet18_mine.pth")
    timm = pytest.importorskip("timm")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    save_file(timm.create_model("resnet18", pretrained=False, num_classes=5).state_dict(),
              root / "timm_resnet18.safetensors")  # fmt: skip
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=32, num_labels=3)  # fmt: skip
    transformers.ViTForImageClassification(config).save_pretrained(root / "my-hf-model")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "my-hf-model")
    tuned = transformers.ViTForImageClassification(
        transformers.ViTConfig(**{**config.to_dict(), "num_labels": 5})
    )
    torch.save(tuned.state_dict(), root / "my-hf-finetuned.pth")
    net = resnet18(10)
    torch.jit.save(torch.jit.script(net), root / "classifier.pt")
    batch = {0: torch.export.Dim("batch")}  # exported with a dynamic batch size, as the README says
    exported = torch.export.export(net, (torch.rand(2, 3, 224, 224),), dynamic_shapes=(batch,))
    torch.export.save(exported, root / "classifier.pt2")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("n", range(7))
def test_each_readme_command_runs_as_written(readme_world, n, monkeypatch):
    command = readme_commands()[n]
    monkeypatch.chdir(readme_world)
    args = shlex.split(command)[1:]
    r = lab4(*args, "--cpu", "--limit", "16", "--batch-size", "16")
    assert r.exit_code == 0, f"{command}\n{r.output}"
    out = readme_world / args[args.index("--out") + 1]
    recorded = next(p for p in sorted(out.rglob("config.json")) if "model_source" in p.read_text())
    source = json.loads(recorded.read_text())["config"]["model_source"]
    assert source["preprocess"] == args[args.index("--preprocess") + 1]
    if "--weights" in args:  # the checkpoint, recorded with its hash
        weights = readme_world / args[args.index("--weights") + 1]
        assert source["checkpoint"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
