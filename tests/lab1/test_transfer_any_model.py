"""`lab1 transfer --from` a torchvision, timm or Hugging Face classifier (dla_core.adapters), offline with random
weights (--weights none) at tiny sizes: exact trainable counts per row from each family's own modules, the SVM fed
the adapter's penultimate features, frozen parts (weights and BatchNorm statistics) unchanged while the head
learns, --resume skipping finished rows, model_source in config.json, and bad inputs as one Error line."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from dla_core.data import ImageBatches, fake_data
from dla_core.engine import TrainConfig, classification_step, fit, make_accelerator
from dla_core.runs import RunDir
from lab1_resnet.cli import group
from lab1_resnet.sources import load_source
from lab1_resnet.train import load_data
from lab1_resnet.transfer import PartlyFrozen, with_new_head
from tests.tiny_models import save_tiny_hf_resnet, save_tiny_hf_vit

TINY = ["--dataset", "digits:0-2", "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--cpu"]
MOBILENET = "torchvision:mobilenet_v3_small"


def lab1(*argv, ok: bool = True):
    r = CliRunner().invoke(group, ["transfer", *map(str, argv)])
    if ok:
        assert r.exit_code == 0, r.output
    return r


def n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rows_of(out) -> dict[str, dict]:
    return {row["row"]: row for row in json.loads((out / "metrics.json").read_text())["rows"]}


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    pytest.importorskip("transformers")
    return save_tiny_hf_vit(tmp_path_factory.mktemp("hf") / "vit", num_labels=4)


#### torchvision ####


@pytest.mark.slow
def test_torchvision_rows_count_exactly_freeze_what_they_say_and_feed_the_svm_its_features(
    tmp_path, monkeypatch
):
    from sklearn.pipeline import Pipeline
    from torchvision.models import MobileNet_V3_Small_Weights, mobilenet_v3_small

    fitted = []  # what each scikit-learn pipeline was fitted on: the SVM's first
    pipeline_fit = Pipeline.fit
    monkeypatch.setattr(
        Pipeline, "fit", lambda self, x, y, **kw: fitted.append(x) or pipeline_fit(self, x, y)
    )
    out = tmp_path / "tv"
    r = lab1("--from", MOBILENET, "--weights", "none", "--optimizers", "adam", *TINY, "--out", out)
    rows = rows_of(out)
    own = mobilenet_v3_small(
        num_classes=3
    )  # the family's own modules: features[0] the stem, 12 blocks after it
    head = 1024 * 3 + 3
    early = n(own.features[0]) + sum(n(own.features[i]) for i in range(1, 7))
    assert {name: row["trainable_parameters"] for name, row in rows.items()} == {
        "features + linear SVM": (1024 + 1) * 3,
        "features + 5-NN": 0,
        "finetune-head-adam": head,
        "finetune-freeze-stem-adam": n(own) - n(own.features[0]),
        "finetune-freeze-early-adam": n(own) - early,
        "finetune-none-adam": n(own),
        "scratch-adam": n(own),
    }
    assert "| finetune-head-adam | adam | 3,075 |" in r.output
    # config.json: what the model was and how its images were prepared (digits at 8 px → 224 px), each row too
    source = RunDir.open(out).config["model_source"]
    assert source["family"] == "torchvision" and source["preprocessing"]["crop"] == [224, 224]
    assert RunDir(out / "rows" / "finetune-head-adam").config["model_source"] == source

    # the SVM was fitted on the adapter's penultimate features: the input of classifier[3], computed here the
    # family's own way on the first training images (unshuffled, in order), after its weights' own transform
    model = load_source(MOBILENET, "none").eval()
    train = load_data("digits:0-2", tmp_path, 0.1).train
    x = train.images[: len(fitted[0])].float().expand(-1, 3, -1, -1) / 255  # grey → RGB
    with torch.no_grad():
        net, transform = model.net, MobileNet_V3_Small_Weights.DEFAULT.transforms()
        expected = net.classifier[:3](torch.flatten(net.avgpool(net.features(transform(x))), 1))
    scale = (
        expected.abs().max()
    )  # a random MobileNet's features are tiny (~1e-9): compared at their own scale
    assert (
        scale > 0 and expected.std(0).mean() > 0.1 * expected.abs().mean()
    )  # and they differ between images
    torch.testing.assert_close(torch.from_numpy(fitted[0]) / scale, expected / scale, rtol=1e-4, atol=1e-4)

    # each row's model.safetensors is the family's own state dict with the new classes; freeze-early left the
    # stem and the first six blocks as the source had them (BatchNorm statistics included), the rest trained
    from safetensors.torch import load_file

    before = model.net.state_dict()
    for name, frozen in (("finetune-freeze-early-adam", 7), ("finetune-head-adam", 13)):
        after = load_file(out / "rows" / name / "model.safetensors")
        own.load_state_dict(after)  # loads as torchvision's mobilenet_v3_small(num_classes=3), strictly
        changed = {k for k in before if "num_batches" not in k and not torch.equal(before[k], after[k])}
        assert not {k for k in changed if int(k.split(".")[1]) < frozen and k.startswith("features.")}, name
        assert (name == "finetune-head-adam") == (
            not changed & {k for k in before if k.startswith("features.")}
        )
        assert not torch.equal(after["classifier.3.weight"][:1], before["classifier.3.weight"][:1])


def test_a_strategy_the_family_cannot_name_is_refused_before_any_folder(tmp_path):
    out = tmp_path / "shuffle"
    for strategy in ("freeze-stem", "freeze-early"):
        r = lab1("--from", "torchvision:shufflenet_v2_x0_5", "--weights", "none", "--strategies",
                 f"head,{strategy}", *TINY, "--out", out, ok=False)  # fmt: skip
        assert r.exit_code == 1 and r.output == (
            f"Error: --strategies {strategy}: torchvision:shufflenet_v2_x0_5 has no stem and blocks dla can name "
            "(see lab1 transfer --help); head and none work for every model\n"
        )
    assert not out.exists()


#### timm ####


def test_timm_rows_freeze_its_own_groups(tmp_path):
    timm = pytest.importorskip("timm")
    out = tmp_path / "timm"
    lab1("--from", "timm:test_resnet", "--weights", "none", "--strategies", "head,freeze-early",
         "--optimizers", "sgd", "--no-scratch", *TINY, "--out", out)  # fmt: skip
    rows = rows_of(out)
    own = timm.create_model("test_resnet", num_classes=3)  # stem: conv1, bn1; blocks: layer1 … layer4
    early = n(own.conv1) + n(own.bn1) + n(own.layer1) + n(own.layer2)
    assert rows["finetune-head-sgd"]["trainable_parameters"] == n(own.fc)
    assert rows["finetune-freeze-early-sgd"]["trainable_parameters"] == n(own) - early
    assert rows["features + linear SVM"]["trainable_parameters"] == (own.num_features + 1) * 3
    assert RunDir.open(out).config["model_source"]["family"] == "timm"


#### Hugging Face ####


def test_hf_rows_counts_and_resume_skips_finished_rows(hf_vit, tmp_path, monkeypatch):
    import transformers

    out = tmp_path / "hf"
    argv = ["--from", f"hf:{hf_vit}", "--weights", "none", "--strategies", "head,freeze-stem", "--optimizers",
            "adam", *TINY, "--out", out]  # fmt: skip
    lab1(*argv)
    rows = rows_of(out)
    own = transformers.ViTForImageClassification(transformers.ViTConfig.from_pretrained(hf_vit, num_labels=3))
    assert rows["finetune-head-adam"]["trainable_parameters"] == 16 * 3 + 3
    assert rows["finetune-freeze-stem-adam"]["trainable_parameters"] == n(own) - n(own.vit.embeddings)
    assert rows["scratch-adam"]["trainable_parameters"] == n(own)
    assert RunDir.open(out).config["model_source"]["processor"] == "ViTImageProcessor"

    # --resume: the finished rows are read back, a missing one is trained again
    kept = out / "rows" / "finetune-head-adam" / "model.safetensors"
    mtime = kept.stat().st_mtime_ns
    redo = out / "rows" / "scratch-adam"
    for f in redo.iterdir():
        f.unlink()
    redo.rmdir()
    steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or adam_step(self, *a, **k)
    )
    lab1(*argv, "--resume")
    assert kept.stat().st_mtime_ns == mtime and (redo / "model.safetensors").exists()
    assert len(steps) == 2  # the scratch row's two steps (--max-steps 2), none for the finished rows
    assert rows_of(out) == rows


#### Freezing, per family ####

FAMILIES = {  # spec → {strategy: the prefixes of the frozen state (weights and BatchNorm statistics)}
    MOBILENET: {"head": ["net.features.", "net.classifier.0."],
                "freeze-early": [f"net.features.{i}." for i in range(7)]},
    "timm:test_resnet": {"freeze-early": ["net.conv1.", "net.bn1.", "net.layer1.", "net.layer2."]},
    "hf-resnet": {"head": ["net.resnet."], "freeze-stem": ["net.resnet.embedder."]},
}  # fmt: skip
HEADS = {MOBILENET: "net.classifier.3.", "timm:test_resnet": "net.fc.", "hf-resnet": "net.classifier.1."}


@pytest.mark.parametrize(("spec", "strategy"), [(s, k) for s, d in FAMILIES.items() for k in d])
def test_frozen_parts_keep_weights_and_statistics_while_the_head_learns(spec, strategy, tmp_path):
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    if spec == "hf-resnet":
        pytest.importorskip("transformers")
        spec = f"hf:{save_tiny_hf_resnet(tmp_path / 'resnet')}"
    key = "hf-resnet" if spec.startswith("hf:") else spec
    torch.manual_seed(1)
    inner = with_new_head(load_source(spec, "none"), 3, {})
    model = PartlyFrozen(inner, strategy)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # the new head is the one the features meet: features → head gives the logits
        f, logits = inner.eval().features_and_logits(x)
        torch.testing.assert_close(inner.head(f), logits)
        assert logits.shape == (2, 3) and f.shape[1] == inner.head.in_features
    model.train()
    if strategy == "head":  # all of the network but the head in eval mode (BatchNorm and dropout alike)
        assert [m for m in inner.modules() if m.training] == [inner.head]
    before = {k: v.clone() for k, v in inner.state_dict().items()}
    train, _ = fake_data((3, 16, 16), n_train=16, n_test=4, num_classes=3)
    fit(model, ImageBatches(train, 8, shuffle=True), TrainConfig(epochs=1, lr=0.05, optimizer="sgd"),
        accelerator=make_accelerator(cpu=True), step=classification_step)  # fmt: skip
    after = inner.state_dict()
    changed = {k for k in before if "num_batches" not in k and not torch.equal(before[k], after[k])}
    frozen = FAMILIES[key][strategy]
    assert not {k for k in changed if k.startswith(tuple(frozen))}, "a frozen part changed"
    assert any(k.startswith(HEADS[key]) for k in changed), "the head did not learn"
    body = {k for k in changed if not k.startswith(HEADS[key])}
    if strategy == "head":
        assert body == set()  # everything but the head: weights and BatchNorm statistics
    else:
        assert body, "the unfrozen body did not train"


#### Bad inputs ####


def test_bad_sources_are_one_error_line_and_nothing_on_disk(tmp_path, monkeypatch):
    script = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))), script)
    out = tmp_path / "x"
    cases = [
        (["--from", "timm:"], "Error: --from timm:: give a name after 'timm:' (timm:NAME)"),
        (["--from", "nosuch:thing"], "Error: --from nosuch:thing: no such folder or file, and not a model spec"),
        (["--from", "torchvision:resnet19", "--weights", "none"], "Error: torchvision has no classifier 'resnet19'"),
        (["--from", script], f"Error: --from {script} gives logits only (a torchscript file): this method needs "
                             "penultimate features (SVM / k-NN rows) and a head to replace"),
        (["--from", script, "--weights", "none"], "Error: --weights none builds torchvision:, timm: or hf: models"),
    ]  # fmt: skip
    for argv, message in cases:
        r = lab1(*argv, *TINY, "--out", out, ok=False)
        assert r.exit_code == 1 and r.output.startswith(message) and r.output.count("\n") == 1, r.output
    for module, extra, spec in (
        ("timm", "timm", "timm:test_resnet"),
        ("transformers", "hf", f"hf:{tmp_path}"),
    ):
        with monkeypatch.context() as m:
            m.setitem(__import__("sys").modules, module, None)  # importing it now fails, as when absent
            r = lab1("--from", spec, "--weights", "none", *TINY, "--out", out, ok=False)
        assert r.output == f"Error: this model needs {module}: pip install 'dla-core[{extra}]'\n"
    assert not out.exists()


def test_the_readme_shows_lab1_transfer_from_every_family_and_each_example_parses(tmp_path, monkeypatch):
    import shlex
    from pathlib import Path

    from dla_core.model_spec import parse_model_spec

    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    lines = [line.split("#")[0] for line in text.replace("\\\n", " ").splitlines()]
    examples = [shlex.split(line)[2:] for line in lines if line.startswith("lab1 transfer --from ")]
    monkeypatch.chdir(tmp_path)  # the run folders the examples name, made here
    for argv in examples:
        if argv[1].startswith("runs/"):
            (tmp_path / argv[1]).mkdir(parents=True, exist_ok=True)
    families = set()
    for argv in examples:
        ctx = group.commands["transfer"].make_context(
            "transfer", list(argv)
        )  # every option exists and parses
        source = ctx.params["source"]
        families.add("run" if source.startswith("runs/") else parse_model_spec(source).family)
    assert families == {"run", "torchvision", "timm", "hf"}
    assert any("--weights none" in " ".join(argv) for argv in examples)


def test_a_dla_run_or_its_model_file_transfers_as_before_without_model_source(tmp_path):
    run = tmp_path / "src"
    r = CliRunner().invoke(group, ["train", "--model", "cnn", "--depth", "1", "--channels", "2", "--dataset",
                                   "digits:0-4", "--epochs", "1", "--max-steps", "1", "--out", str(run)])  # fmt: skip
    assert r.exit_code == 0, r.output
    for source in (run, run / "model.safetensors"):
        out = tmp_path / f"t-{source.name}"
        lab1("--from", source, "--strategies", "head", "--optimizers", "adam", "--no-scratch",
             "--dataset", "digits:5-9", "--epochs", "1", "--max-steps", "1", "--out", out)  # fmt: skip
        assert rows_of(out)["finetune-head-adam"]["trainable_parameters"] == 2 * 5 + 5
        assert "model_source" not in RunDir.open(out).config


#### your own checkpoint ####


def test_own_checkpoint_needs_its_preprocessing_and_every_row_keeps_it(tmp_path):
    """--weights FILE on lab1 transfer as on lab4: without --preprocess one Error line and no folder; with it the
    source loads the checkpoint (its sha256 recorded) and the scratch row is prepared the same way."""
    import hashlib

    from torchvision.models import resnet18

    net = resnet18(num_classes=3)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    ckpt = tmp_path / "mine.pth"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    spec = "torchvision:resnet18+cifar-stem"
    out = tmp_path / "t"
    r = lab1("--from", spec, "--weights", ckpt, *TINY, "--out", out, ok=False)
    assert r.exit_code != 0 and r.output.startswith("Error: --weights") and len(r.output.splitlines()) == 1
    assert not out.exists()

    pre = "mean=0.5,std=0.25"
    lab1("--from", spec, "--weights", ckpt, "--preprocess", pre, "--strategies", "head", "--optimizers", "adam",
         "--no-features", *TINY, "--out", out)  # fmt: skip
    from safetensors import safe_open

    source = json.loads((out / "config.json").read_text())["config"]["model_source"]
    assert source["checkpoint"]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert source["preprocessing"]["mean"] == [0.5] and source["preprocessing"]["std"] == [0.25]
    saved = {}  # what each row's model is, as its model.safetensors says
    for row in ("finetune-head-adam", "scratch-adam"):
        with safe_open(str(out / "rows" / row / "model.safetensors"), "pt") as f:
            saved[row] = json.loads(f.metadata()["model_source"])
    assert saved["finetune-head-adam"]["weights"] == "checkpoint" and saved["scratch-adam"]["weights"] is None
    for row, described in saved.items():
        assert described["preprocessing"] == source["preprocessing"], row


def test_a_misused_cifar_stem_names_the_option_given(tmp_path):
    """The spec parser's refusals name the option the spec came through (--from here, --model in lab4)."""
    r = lab1(
        "--from",
        "torchvision:vgg11+cifar-stem",
        "--weights",
        "none",
        *TINY,
        "--out",
        tmp_path / "x",
        ok=False,
    )
    assert not (tmp_path / "x").exists()
    assert r.exit_code != 0 and r.output.startswith("Error: --from torchvision:vgg11+cifar-stem:"), r.output
