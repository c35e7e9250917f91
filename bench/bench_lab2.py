"""lab2 finetune vs the Hugging Face Trainer defaults: steady-state training samples/s fine-tuning DistilBERT.

    python bench/bench_lab2.py [--n 1024] [--epochs 1] [--batch-size 32] [--layers 6] [--precision no]
                               [--device auto|cpu|cuda] [--repeats 3]

Both fine-tune the same random-init ``DistilBertConfig()`` (66M parameters with the default 6 layers) on the
same synthetic sentences with Rotten-Tomatoes-like lengths (~20 words, 3 to 60), tokenized beforehand by the
same WordPiece tokenizer (a 30,522-word synthetic vocabulary), with batch size, learning rate and epochs
equal. The reference is ``Trainer`` with its defaults (DataLoader + DataCollatorWithPadding, random order,
AdamW, linear schedule, gradient clipping; ``bf16=True`` / ``fp16=True`` for ``--precision``) over the
tokenized rows (a list of dicts, as ``datasets``' ``map`` would give, so ``datasets`` need not be installed); lab2 is
``run_finetune`` (the core engine over length-grouped, dynamically padded ``TokenBatches``, ``precision``).

What is timed, the same way on both sides: a process-wide optimizer-step hook stamps the end of every optimizer
step (a CUDA event on the GPU, so no extra synchronisation). Samples/s = samples of steps 2..S of each epoch /
the time from the end of step 1 to the end of step S: model loading, tokenizing, the first (warm-up) step of each
epoch, validation, checkpoints and the test pass are outside on both sides. ``--n`` is rounded down to a
multiple of the batch size, so every step has the same batch size on both sides (lab2 drops a last partial
batch, Trainer does not). Each side's own figure (lab2's ``train_samples_per_second``, Trainer's, both with
the first step included) is printed too. After an untimed warm-up run of each side (``--warmup-n``
sentences; default: all of them on a GPU, whose first run in a process is several times slower throughout,
4 batches on the CPU), ``--repeats`` runs alternate the two sides (Trainer first in odd runs); the medians and
their ratio are reported, and a last line ``RESULT lab2: ref=… ours=… ratio=…x``.
Default device: CUDA when there is one. Target: ≥ 1.0× on the CPU; on a GPU ≥ 1.5× with ``--precision bf16``.
``--layers 1 --n 128`` runs in a minute or two on a laptop CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported (transformers, datasets)

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


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


class StepClock:
    """Stamps the end of every optimizer step of the process (Accelerate's wrapper is skipped: its inner
    optimizer's step is the one that counts). On CUDA the stamps are events, read after one final sync."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.stamps: list = []
        self._handle = None

    def __enter__(self) -> StepClock:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._handle = register_optimizer_step_post_hook(self._stamp)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _stamp(self, optimizer, args, kwargs) -> None:
        if type(optimizer).__name__ == "AcceleratedOptimizer":
            return
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.stamps.append(event)
        else:
            self.stamps.append(time.perf_counter())

    def steady(self, epochs: int, batch_size: int, n: int) -> float:
        """Samples/s over steps 2..S of every epoch (each step's time: from the previous step's end to its own)."""
        if self.cuda:
            torch.cuda.synchronize()
            times = [0.0] + [
                a.elapsed_time(b) / 1000 for a, b in zip(self.stamps, self.stamps[1:], strict=False)
            ]
            times = list(np.cumsum(times))
        else:
            times = self.stamps
        steps, per_epoch = len(times), n // batch_size
        if steps != epochs * per_epoch:
            raise SystemExit(f"counted {steps} optimizer steps, expected {epochs} × {per_epoch}")
        kept = [i for i in range(1, steps) if i % per_epoch != 0]  # not the first step of an epoch
        seconds = sum(times[i] - times[i - 1] for i in kept)
        return len(kept) * batch_size / seconds


def lab2_way(
    model_dir: Path, data_dir: Path, out: Path, args: argparse.Namespace, n: int
) -> tuple[float, float]:
    from dla_core.config import Runtime
    from dla_core.engine import TrainConfig
    from lab2_distilbert.data import DataConfig, load_text_splits
    from lab2_distilbert.experiments import FinetuneConfig, encode_splits, run_finetune
    from lab2_distilbert.models import load_tokenizer

    data = DataConfig(source=str(data_dir), max_length=128, cache_dir=str(out.parent / "cache"))
    encode_splits(
        load_tokenizer(str(model_dir)), load_text_splits(data), data
    )  # tokenize beforehand, as for HF
    train = TrainConfig(
        epochs=args.epochs, lr=2e-5, optimizer="adamw", schedule="linear", precision=args.precision
    )
    cfg = FinetuneConfig(
        model=str(model_dir), data=data, strategy="full", batch_size=args.batch_size, train=train
    )
    with StepClock(args.torch_device) as clock:
        metrics = run_finetune(cfg, Runtime(out=out, cpu=args.torch_device.type == "cpu"))
    return clock.steady(args.epochs, args.batch_size, n), metrics["train_samples_per_second"]


def trainer_way(
    model_dir: Path, data_dir: Path, out: Path, args: argparse.Namespace, n: int
) -> tuple[float, float]:
    import csv

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with open(data_dir / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=128)
    ds = [  # what datasets' .map(tokenizer) gives, without needing datasets installed
        {"input_ids": ids, "attention_mask": mask, "label": int(r["label"])}
        for ids, mask, r in zip(enc["input_ids"], enc["attention_mask"], rows, strict=True)
    ]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    targs = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
        learning_rate=2e-5, use_cpu=args.torch_device.type == "cpu", bf16=args.precision == "bf16",
        fp16=args.precision == "fp16", report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=targs, train_dataset=ds, processing_class=tokenizer)
    with StepClock(args.torch_device) as clock:
        reported = trainer.train().metrics["train_samples_per_second"]
    return clock.steady(args.epochs, args.batch_size, n), reported


def fresh_accelerate_state() -> None:
    """Forget Accelerate's process-wide mixed precision between the sides: Trainer sets it to ``bf16``/``fp16``
    while lab2's accelerator always asks for ``no`` (it autocasts itself), and Accelerate refuses a change within
    one process (each side would have its own process outside this benchmark). The device state is kept."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.device(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1024, help="training sentences (rounded down to whole batches)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--layers", type=int, default=6, help="DistilBERT layers (6 = DistilBertConfig(), 66M)")
    p.add_argument("--precision", choices=["no", "fp16", "bf16"], default="no")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when there is one"
    )
    p.add_argument("--gpu", dest="device", action="store_const", const="cuda", help="same as --device cuda")
    p.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating; medians reported")
    p.add_argument(
        "--warmup-n",
        type=int,
        default=None,
        help="sentences of the untimed warm-up run [default: --n on a GPU, 4 batches on the CPU; 0: none]",
    )
    args = p.parse_args()
    args.torch_device = pick_device(args.device)
    if args.n < 2 * args.batch_size:
        raise SystemExit(f"--n {args.n}: need at least two batches of {args.batch_size}")
    bs = args.batch_size
    n = args.n - args.n % bs
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head's "newly initialized" report, once per load
    ref, ours, ref_own, ours_own = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, data_dir = write_fixture(root, n, args.layers)
        # warm-up, untimed: on a GPU the first run in a process is several times slower all through (kernels load
        # lazily, per shape: measured 224 vs 1494 samples/s for Trainer on an H200), so both sides run once first
        warm_n = (
            args.warmup_n
            if args.warmup_n is not None
            else (n if args.torch_device.type == "cuda" else 4 * bs)
        )
        warm_n -= warm_n % bs
        if warm_n >= 2 * bs:
            if warm_n == n:
                warm_model, warm_data = model_dir, data_dir
            else:
                (root / "warm").mkdir()
                warm_model, warm_data = write_fixture(root / "warm", warm_n, args.layers)
            for way in (trainer_way, lab2_way):
                fresh_accelerate_state()
                way(warm_model, warm_data, root / f"warm-{way.__name__}", args, warm_n)
        for r in range(args.repeats):
            for side in ("trainer", "lab2") if r % 2 == 0 else ("lab2", "trainer"):
                fresh_accelerate_state()
                if side == "trainer":
                    steady, own = trainer_way(model_dir, data_dir, root / f"hf-out{r}", args, n)
                    ref.append(steady)
                    ref_own.append(own)
                else:
                    steady, own = lab2_way(model_dir, data_dir, root / f"lab2-run{r}", args, n)
                    ours.append(steady)
                    ours_own.append(own)
            print(
                f"run {r + 1}: Trainer {ref[-1]:.1f} samples/s, lab2 {ours[-1]:.1f} samples/s, "
                f"ratio {ours[-1] / ref[-1]:.2f}x (as each reports itself, first step in: Trainer "
                f"{ref_own[-1]:.1f}, lab2 {ours_own[-1]:.1f})",
                flush=True,
            )
    device = args.torch_device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()})"
    print(
        f"machine: {where}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print(f"DistilBERT {args.layers} layers, {n} sentences × {args.epochs} epoch(s), batch {args.batch_size}, "
          f"precision {args.precision}; median of {args.repeats}, first step of each epoch excluded")  # fmt: skip
    hf, lab2 = statistics.median(ref), statistics.median(ours)
    print(
        f"HF Trainer defaults: {hf:8.1f} samples/s  (as it reports itself: {statistics.median(ref_own):.1f})"
    )
    print(
        f"lab2 finetune:       {lab2:8.1f} samples/s  (as it reports itself: {statistics.median(ours_own):.1f})"
    )
    print(f"ratio: {lab2 / hf:.2f}× (target ≥ 1.0× on the CPU, ≥ 1.5× on a GPU with bf16)")
    print(
        f"RESULT lab2: ref={hf:.2f} ours={lab2:.2f} ratio={lab2 / hf:.2f}x (training samples/s, steady state)"
    )


if __name__ == "__main__":
    main()
