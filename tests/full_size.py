"""Full-size stand-ins for what `labN reproduce --profile full` downloads, for its smoke runs (tests marked slow).

    write_image_datasets(root)   MNIST idx 60,000 / 10,000; CIFAR-10 and CIFAR-100 python pickles 50,000 / 10,000
    put_in_hub_cache(cache, repo_id, folder, kind)   a folder as the hub's cache holds a download of repo_id
    run_lab("lab1", "reproduce", …, env=…)          the lab's console script in a fresh process, as a user runs it

The images are random uint8 noise with random labels (nothing to learn: the smoke runs check wiring, loading
and memory at the real sizes, not accuracy), written by core's writers of the official formats in a few seconds.
CIFAR-100 carries the real fine label names (so ``cifar100:people`` and lab4's index ranges mean what they
mean); the five people classes sit in the superclass "people", the other 95 fill the other 19 superclasses five
by five in order (not CIFAR-100's own grouping, which no recipe reads).

``put_in_hub_cache`` lays a folder out as huggingface_hub's cache (``models--owner--name/snapshots/<rev>/``
with ``refs/main``): with ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing there, ``from_pretrained(repo_id)``
and ``datasets.load_dataset(repo_id)`` find it exactly as they find a real download — the recipes' hub names
are exercised, not replaced by local paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# seconds a lab's full smoke run may take in its test: minutes on the quiet 2-core CPU, several times that when
# other jobs share the cores (pyproject's 900 s default is too short there)
FULL_SMOKE_TIMEOUT = 2700
MNIST_SIZES = (60_000, 10_000)
CIFAR_SIZES = (50_000, 10_000)
CIFAR100_FINE = (  # noqa: SIM905 (a list of 100 words reads better as one string)
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard "
    "lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear "
    "pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal "
    "shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
    "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()
CIFAR100_COARSE = (  # noqa: SIM905
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes "
    "large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees "
    "vehicles_1 vehicles_2"
).split()
PEOPLE = ("baby", "boy", "girl", "man", "woman")


def _coarse_of_fine() -> np.ndarray:
    people = CIFAR100_COARSE.index("people")
    others = iter(c for c in range(20) if c != people for _ in range(5))
    return np.array([people if name in PEOPLE else next(others) for name in CIFAR100_FINE])


def write_image_datasets(root: Path, seed: int = 0) -> Path:
    """MNIST, CIFAR-10 and CIFAR-100 at their real sizes in torchvision's layout under ``root``."""
    from dla_core.data import formats

    rng = np.random.default_rng(seed)
    for train, n in zip((True, False), MNIST_SIZES, strict=True):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        formats.write_mnist(root, train, images, rng.integers(0, 10, n).astype(np.uint8), gz=not train)

    def cifar(n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), rng.integers(0, classes, n)

    (x_tr, y_tr), (x_te, y_te) = (cifar(n, 10) for n in CIFAR_SIZES)
    formats.write_cifar10(root, x_tr, y_tr, x_te, y_te)
    coarse = _coarse_of_fine()
    (x_tr, f_tr), (x_te, f_te) = (cifar(n, 100) for n in CIFAR_SIZES)
    formats.write_cifar100(
        root, (x_tr, f_tr, coarse[f_tr]), (x_te, f_te, coarse[f_te]), list(CIFAR100_FINE), CIFAR100_COARSE
    )
    return root


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, kind: str = "model") -> Path:
    """Move ``folder``'s files into the hub cache ``cache`` as revision main of ``repo_id``; the snapshot folder."""
    revision = "0" * 40
    repo = Path(cache) / f"{kind}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def run_lab(
    lab: str, *args: object, env: Mapping[str, str] | None = None, timeout: float = FULL_SMOKE_TIMEOUT
):
    """Run this environment's ``lab`` console script with ``args`` (progress bars off, ``env`` added); the
    completed process, its output captured. One torch thread unless OMP_NUM_THREADS says otherwise: two threads
    per process on two shared cores made lab1's smoke run many times slower (bench/RESULTS.md, issue 22)."""
    script = Path(sys.executable).with_name(lab)
    return subprocess.run(
        [str(script), *map(str, args)],
        env={"OMP_NUM_THREADS": "1", **os.environ, "TQDM_DISABLE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def failure(result: subprocess.CompletedProcess) -> str:
    """The end of a failed run's output, for an assertion message."""
    return f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
