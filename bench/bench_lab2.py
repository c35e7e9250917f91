"""lab2 finetune vs the Hugging Face Trainer defaults: training samples/s fine-tuning DistilBERT, same run.

    python bench/bench_lab2.py [--n 1024] [--epochs 1] [--batch-size 32] [--layers 6] [--precision no]

Both fine-tune the same random-init ``DistilBertConfig()`` (66M parameters with the default 6 layers) on the
same synthetic sentences with Rotten-Tomatoes-like lengths (~20 words, 3 to 60), tokenized beforehand by the
same WordPiece tokenizer (a 30,522-word synthetic vocabulary), with batch size, learning rate and epochs
equal. The reference is ``Trainer`` with its defaults (DataLoader + DataCollatorWithPadding, random order,
AdamW, linear schedule); lab2 is ``run_finetune`` (the core engine over length-grouped, dynamically padded
``TokenBatches``). Samples/s count training only (lab2: the epochs' own seconds; Trainer: its
``train_samples_per_second``). Target: ≥ 1.0× on the CPU; on a GPU ≥ 1.5× with ``--precision bf16``.
``--layers 1 --n 256`` runs in a minute or two on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (transformers, datasets)

import numpy as np
import torch


def write_fixture(root: Path, n: int, layers: int, seed: int = 0) -> tuple[Path, Path]:
    """A random-init DistilBERT + tokenizer folder and a data folder (train n, validation/test 64)."""
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizerFast

    config = DistilBertConfig(n_layers=layers)
    words = [f"w{i}" for i in range(config.vocab_size - 5)]
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    model_dir, data_dir = root / "model", root / "data"
    torch.manual_seed(seed)
    DistilBertModel(config).save_pretrained(model_dir)
    DistilBertTokenizerFast(vocab=str(root / "vocab.txt")).save_pretrained(model_dir)
    rng = np.random.default_rng(seed)
    data_dir.mkdir()
    for split, size in (("train", n), ("validation", 64), ("test", 64)):
        lengths = np.clip(rng.normal(20, 9, size).round(), 3, 60).astype(int)  # words per sentence
        labels = rng.integers(0, 2, size)
        rows = [" ".join(words[j] for j in rng.integers(0, 20_000, k)) for k in lengths]
        lines = ["text,label"] + [f"{r},{y}" for r, y in zip(rows, labels, strict=True)]
        (data_dir / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return model_dir, data_dir


def lab2_way(model_dir: Path, data_dir: Path, root: Path, args: argparse.Namespace) -> float:
    from dla_core.config import Runtime
    from dla_core.engine import TrainConfig
    from lab2_distilbert.data import DataConfig, load_text_splits
    from lab2_distilbert.experiments import FinetuneConfig, encode_splits, run_finetune
    from lab2_distilbert.models import load_tokenizer

    data = DataConfig(source=str(data_dir), max_length=128, cache_dir=str(root / "cache"))
    encode_splits(
        load_tokenizer(str(model_dir)), load_text_splits(data), data
    )  # tokenize beforehand, as for HF
    train = TrainConfig(
        epochs=args.epochs, lr=2e-5, optimizer="adamw", schedule="linear", precision=args.precision
    )
    cfg = FinetuneConfig(
        model=str(model_dir), data=data, strategy="full", batch_size=args.batch_size, train=train
    )
    metrics = run_finetune(cfg, Runtime(out=root / "lab2-run", cpu=args.cpu))
    return metrics["train_samples_per_second"]


def trainer_way(model_dir: Path, data_dir: Path, root: Path, args: argparse.Namespace) -> float:
    import datasets
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ds = datasets.load_dataset(
        "csv", data_files={"train": str(data_dir / "train.csv")}, cache_dir=str(root / "hf")
    )
    ds = ds["train"].map(lambda b: tokenizer(b["text"], truncation=True, max_length=128), batched=True)
    ds = ds.remove_columns(["text"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    targs = TrainingArguments(
        output_dir=str(root / "hf-out"), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=2e-5, use_cpu=args.cpu, bf16=args.precision == "bf16", fp16=args.precision == "fp16",
        report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=targs, train_dataset=ds, processing_class=tokenizer)
    return trainer.train().metrics["train_samples_per_second"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024, help="training sentences")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layers", type=int, default=6, help="DistilBERT layers (6 = DistilBertConfig(), 66M)")
    p.add_argument("--precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument(
        "--gpu", dest="cpu", action="store_false", help="use the GPU when there is one (default: CPU)"
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, data_dir = write_fixture(root, args.n, args.layers)
        hf = trainer_way(model_dir, data_dir, root, args)
        ours = lab2_way(model_dir, data_dir, root, args)
    device = "cpu" if args.cpu or not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {device}"
    )
    print(f"DistilBERT {args.layers} layers, {args.n} sentences × {args.epochs} epoch(s), batch {args.batch_size}, "
          f"precision {args.precision}")  # fmt: skip
    print(f"HF Trainer defaults: {hf:8.1f} samples/s")
    print(f"lab2 finetune:       {ours:8.1f} samples/s")
    print(f"ratio: {ours / hf:.2f}× (target ≥ 1.0× on the CPU, ≥ 1.5× on a GPU with bf16)")


if __name__ == "__main__":
    main()
