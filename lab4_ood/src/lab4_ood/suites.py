"""OpenOOD v1.5's benchmark protocols as ``lab4 benchmark --suite`` runs them, declared once: the ID set, the
near- and far-OOD sets (each as OpenOOD's image list and, where core's registry holds the same images, as that
dataset's own test split), and OpenOOD v1.5's published AUROC of each detector for the reference column.

Facts from OpenOOD's ``openood/evaluation_api/datasets.py`` (the lists under ``benchmark_imglist/``) and its
leaderboard's ``results/*.csv`` (https://github.com/zjysteven/OpenOOD, commit 28d3a40, 2025-07-19).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dla_core.errors import DlaError


@dataclass(frozen=True)
class SuiteSet:
    name: str  # OpenOOD's name of the set
    listed: str  # its image list, relative to benchmark_imglist/
    own: str | None  # the spec of core's registry with the same source images (its own test split), if any


@dataclass(frozen=True)
class Suite:
    id: SuiteSet
    near: tuple[SuiteSet, ...]
    far: tuple[SuiteSet, ...]
    checkpoint: str  # the models behind the published numbers
    preprocessing: str  # OpenOOD's test-time preprocessing

    @property
    def reference(self) -> dict[str, tuple[float, float]]:
        return PUBLISHED_AUROC[self.id.name]


SOURCE = (
    "OpenOOD v1.5 leaderboard (Zhang et al. 2023, arXiv:2306.09301; https://zjysteven.github.io/OpenOOD/, "
    "results/*.csv at commit 28d3a40, 2025-07-19): cross-entropy training, post-hoc detector, no outlier data"
)
# our detector → the leaderboard's row (ash: OpenOOD's ASH; adascale: AdaSCALE-A, our default variant)
LEADERBOARD_NAMES = {
    "msp": "MSP", "maxlogit": "MLS", "energy": "EBO", "odin": "ODIN", "mahalanobis": "MDS", "knn": "KNN",
    "vim": "VIM", "rmds": "RMDS", "gen": "GEN", "react": "ReAct", "ash": "ASH", "scale": "SCALE",
    "dice": "DICE", "fdbd": "fDBD", "nci": "NCI", "nac": "NAC", "weiper": "WeiPer+KLD", "adascale": "AdaSCALE-A",
}  # fmt: skip


def _cifar_sets(other: str, suite: str) -> tuple[tuple[SuiteSet, ...], tuple[SuiteSet, ...]]:
    """CIFAR-10's and CIFAR-100's protocol: the other CIFAR and Tiny ImageNet near, four far sets."""
    at = f"{suite}/test_"
    near = (SuiteSet(other, f"{at}{other}.txt", other), SuiteSet("tin", f"{at}tin.txt", "tiny-imagenet"))
    far = (
        SuiteSet("mnist", f"{at}mnist.txt", "mnist"),
        SuiteSet("svhn", f"{at}svhn.txt", "svhn"),
        SuiteSet("texture", f"{at}texture.txt", "dtd"),
        SuiteSet("places365", f"{at}places365.txt", "places365"),
    )
    return near, far


# OpenOOD v1.5's published (near, far) AUROC in %, by ID set and our detector (the mean over the trainings)
PUBLISHED_AUROC: dict[str, dict[str, tuple[float, float]]] = {
    "cifar10": {
        "msp": (88.03, 90.73), "maxlogit": (87.52, 91.10), "energy": (87.58, 91.21), "odin": (82.87, 87.96),
        "mahalanobis": (84.20, 89.72), "knn": (90.64, 92.96), "vim": (88.68, 93.48), "rmds": (89.80, 92.20),
        "gen": (88.20, 91.35), "react": (87.11, 90.42), "ash": (75.27, 78.49), "scale": (82.55, 86.39),
        "dice": (78.34, 84.23), "fdbd": (90.42, 93.16), "nci": (88.86, 91.27), "nac": (90.93, 94.60),
        "weiper": (90.54, 93.12), "adascale": (83.92, 88.00),
    },
    "cifar100": {
        "msp": (80.27, 77.76), "maxlogit": (81.05, 79.67), "energy": (80.91, 79.77), "odin": (79.90, 79.28),
        "mahalanobis": (58.69, 69.39), "knn": (80.18, 82.40), "vim": (74.98, 81.70), "rmds": (80.15, 82.92),
        "gen": (81.31, 79.68), "react": (80.77, 80.39), "ash": (78.20, 80.58), "scale": (80.99, 81.42),
        "dice": (79.38, 80.01), "fdbd": (81.26, 79.85), "nci": (81.03, 81.32), "nac": (75.90, 86.98),
        "weiper": (81.37, 79.01), "adascale": (81.04, 81.84),
    },
    "imagenet200": {
        "msp": (83.34, 90.13), "maxlogit": (82.90, 91.11), "energy": (82.50, 90.86), "odin": (80.27, 91.71),
        "mahalanobis": (61.93, 74.72), "knn": (81.57, 93.16), "vim": (78.68, 91.26), "rmds": (82.57, 88.06),
        "gen": (83.68, 91.36), "react": (81.87, 92.31), "ash": (82.38, 93.90), "scale": (84.84, 93.98),
        "dice": (81.78, 90.80), "fdbd": (84.27, 93.45), "nci": (83.50, 93.71), "nac": (78.52, 91.02),
        "adascale": (85.52, 94.43),
    },
}  # fmt: skip

CIFAR_PREPROCESSING = "32 px images normalised by the CIFAR mean and std"
SUITES: dict[str, Suite] = {
    "openood-cifar10": Suite(
        SuiteSet("cifar10", "cifar10/test_cifar10.txt", "cifar10"),
        *_cifar_sets("cifar100", "cifar10"),
        checkpoint="ResNet-18, 100 epochs (ID accuracy 95.06 ± 0.30%), mean of 3 trainings",
        preprocessing=CIFAR_PREPROCESSING,
    ),
    "openood-cifar100": Suite(
        SuiteSet("cifar100", "cifar100/test_cifar100.txt", "cifar100"),
        *_cifar_sets("cifar10", "cifar100"),
        checkpoint="ResNet-18, 100 epochs (ID accuracy 77.25 ± 0.10%), mean of 3 trainings",
        preprocessing=CIFAR_PREPROCESSING,
    ),
    "openood-imagenet200": Suite(
        SuiteSet("imagenet200", "imagenet200/test_imagenet200.txt", None),
        (
            SuiteSet("ssb_hard", "imagenet200/test_ssb_hard.txt", None),
            SuiteSet("ninco", "imagenet200/test_ninco.txt", None),
        ),
        (
            SuiteSet("inaturalist", "imagenet200/test_inaturalist.txt", None),
            SuiteSet("textures", "imagenet200/test_textures.txt", "dtd"),
            SuiteSet("openimage_o", "imagenet200/test_openimage_o.txt", None),
        ),
        checkpoint="ResNet-18, 90 epochs at 224 px (ID accuracy 86.37 ± 0.08%), mean of 3 trainings",
        preprocessing="resize to 256 px, centre crop 224 px, ImageNet mean and std",
    ),
}


@dataclass(frozen=True)
class SuitePlan:
    """What a suite runs on this machine: the ID spec, the (name, specs) groups, and where the images come
    from, in words for the report."""

    id: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]
    data: str


def plan(name: str, imglist_dir: Path | None) -> SuitePlan:
    """The suite's sets as specs: OpenOOD's image lists under ``imglist_dir`` when given, else the datasets'
    own test splits (a set that only OpenOOD's lists hold is then refused, all such sets named at once). The
    ID set stays core's dataset where it has one (the CIFAR lists' ID test images are its test split), so the
    detectors fit on the split the model was trained on."""
    suite = SUITES[name]
    if imglist_dir is None:
        listed_only = [e.name for e in (suite.id, *suite.near, *suite.far) if e.own is None]
        if listed_only:
            raise DlaError(
                f"--suite {name} needs OpenOOD's image lists for {', '.join(listed_only)} (no dataset of dla "
                "holds them): pass --imglist-dir DIR, OpenOOD's benchmark_imglist folder"
            )
    spec = lambda e: f"imglist:{imglist_dir / e.listed}" if imglist_dir is not None else e.own  # noqa: E731
    groups = tuple(
        (group, tuple(spec(e) for e in entries))
        for group, entries in (("near", suite.near), ("far", suite.far))
    )
    if imglist_dir is None:
        data = "the datasets' own test splits (no --imglist-dir): " + ", ".join(
            f"{e.name} = {e.own}" for e in (*suite.near, *suite.far)
        )
    else:
        data = f"OpenOOD v1.5's image lists under {imglist_dir} (images relative to the data folder)"
    return SuitePlan(suite.id.own or spec(suite.id), groups, data)


def check_trained_on(plan: SuitePlan, name: str, models: tuple[Path, ...]) -> None:
    """Refuse a model whose run folder records another ID dataset than the suite's (before anything loads)."""
    from lab4_ood.datasets import dataset_of_run

    for model in models:
        trained = dataset_of_run(model)
        if trained is not None and trained.split(":")[0].lower() != plan.id.split(":")[0].lower():
            raise DlaError(
                f"{model} was trained on {trained} but --suite {name} takes {plan.id} as ID; "
                "pass --id SPEC to score it anyway"
            )


def differences(name: str, imglists: bool, preprocess: str | None = None) -> list[str]:
    """What differs between our run and the published numbers, one sentence each."""
    suite = SUITES[name]
    ours = f"--preprocess {preprocess}" if preprocess else "the model's own (normalised inside the model)"
    lines = [
        f"Checkpoint: OpenOOD's {suite.checkpoint}; ours is the --model given.",
        f"Preprocessing: OpenOOD's {suite.preprocessing}; ours resizes every set to the ID set's images "
        f"(bilinear, grey → RGB), then {ours}.",
        "Hyperparameters: our detectors' defaults are OpenOOD's configs; OpenOOD searches some on its "
        "validation OOD list (val_tin.txt / val_openimage_o.txt), ours only with --grid, on held-out splits.",
    ]
    if imglists:
        lines.append("Lists: OpenOOD's own OOD lists; the ID set is the dataset's own test split where core has "
                     "it (CIFAR: the same 10,000 test images).")  # fmt: skip
    else:
        lines.append(
            "Lists: OpenOOD's curated lists drop OOD images that overlap the ID classes (e.g. Tiny ImageNet "
            "classes that are CIFAR classes) and use their own subsets (Places365, Textures); ours are the "
            "datasets' whole test splits (Tiny ImageNet's val, DTD's test1, a seeded 20% of Places365's val)."
        )
    return lines
