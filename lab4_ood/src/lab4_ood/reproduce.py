"""`lab4 reproduce`: the whole lab as run folders, then its report.

Three classifiers — plain, adversarially trained, with outlier exposure — each with a feature autoencoder, every
detector against the OOD sets (one `lab4 detect` per model), and FGSM and PGD accuracy per ε (one `lab4 attack`
per model and attack). The report is built only from those run folders; each finding is a claim judged by the
paired bootstrap of their per-example outcomes (detectors by their AUROC pseudo-outcomes, attacks by each image's
robust correctness): ✓ supported, ✗ contradicted, ～ inconclusive, – not run. No torch at import: `lab4 --help`
stays light.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dla_core.claims import Claim
from dla_core.evidence import Arm, every, judge, judge_outcomes, unchecked
from dla_core.report import Figure, Finding, Section, Table, fmt
from dla_core.reproduce import Recipe, Step, read_run_file
from lab4_ood import methods
from lab4_ood.outcomes import SETS, eps_name

MODELS = {"base": "plain", "adv": "adversarial training", "oe": "outlier exposure"}
ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class Profile:
    id: str
    ood: tuple[str, ...]  # the first is the near OOD set, the one "every detector beats chance" is checked on
    oe: str  # outlier-exposure set (its training split)
    model: tuple[str, ...]  # lab4 train's model and optimiser options, without --epochs
    epochs: int
    adversarial: tuple[str, str]  # adversarial training's attack and ε
    eps: str  # the attacks' ε grid; holds the training ε
    ae_epochs: int
    data: tuple[str, ...] = ()
    # the stopping rule of every training (nets and autoencoders): stop once the validation loss has not improved
    # for this many epochs, so ``epochs`` and ``ae_epochs`` are caps (None: train them all)
    patience: int | None = None
    # training seeds behind the findings that compare models: the first seed runs every step; each further one
    # trains the three models again and repeats only the steps those findings compare (``SEED_DETECTORS``, the
    # attacks of ``seed_attacks``): "every detector beats chance" rests on the first seed alone
    seeds: int = 1
    # per kind of step (the three trainings by name, then ae, detect, fgsm, pgd), on one GPU: a guess (never timed
    # on one)
    minutes: Mapping[str, float] | None = None
    # the same keys, one CPU core, measured; full: 4.5 CPU s per optimizer step of the 64-channel net at batch 128
    # (one thread, bench/full_profile_steps.py) × 30 epochs of 352 steps, PGD-7 adversarial training ≈ 8 passes
    # a step, outlier exposure 2 (its OOD batch), the autoencoder, detect and attack not timed; quick: each step
    # of one run on the project's 2-core CPU, one thread (bench/RESULTS.md, "Issue 23")
    cpu_minutes: Mapping[str, float] | None = None


PROFILES = {
    "quick": Profile(
        id="digits:0-4",
        ood=("digits:5-9", "fake"),
        oe="digits:5-9",
        model=("--model", "cnn", "--width", "16", "--depth", "1", "--lr", "3e-3"),
        # at most: until the validation loss levels off (``patience``); at 10 every training loss and the
        # autoencoders' were still falling
        epochs=60,
        adversarial=("fgsm", "0.1"),
        eps="0,0.02,0.05,0.1,0.2,0.3",
        ae_epochs=60,
        patience=8,
        seeds=3,
        cpu_minutes={  # the run with --patience and digits' test half: 143 CPU s under load (bench/RESULTS.md)
            "base-train": 0.1,
            "adv-train": 0.12,
            "oe-train": 0.1,
            "ae": 0.15,
            "detect": 0.25,  # twenty detectors since NCI, NAC, WeiPer and AdaSCALE (grids searched)
            "seed-detect": 0.03,  # SEED_DETECTORS only: no fit, no grid, no autoencoder
            "fgsm": 0.03,
            "pgd": 0.05,
        },
    ),
    # CIFAR-10 vs CIFAR-100 people, MNIST and noise; outlier exposure on the other 95 CIFAR-100 classes
    # (people are 2 baby, 11 boy, 35 girl, 46 man, 98 woman), so it never sees the test OOD set's classes
    "full": Profile(
        id="cifar10",
        ood=("cifar100:people", "mnist", "fake"),
        oe="cifar100:0-1,3-10,12-34,36-45,47-97,99",
        model=("--model", "cnn", "--width", "64", "--depth", "2", "--stages", "3", "--lr", "1e-3"),
        epochs=30,
        adversarial=("pgd", "0.03"),
        eps="0,0.005,0.01,0.02,0.03,0.05",
        ae_epochs=10,
        data=("--download",),
        minutes={
            "base-train": 6,
            "adv-train": 45,
            "oe-train": 10,
            "ae": 3,
            "detect": 4,
            "fgsm": 0.5,
            "pgd": 2,
        },
        cpu_minutes={"base-train": 823, "adv-train": 6366, "oe-train": 1615},
    ),
}
SEED_DETECTORS = ("msp", "energy")  # what the further seeds detect with: the detectors the findings compare
TINY_LIMIT = ("--limit", "40")  # DLA_REPRODUCE_TINY: images per set for detect and attack
SMOKE_LIMIT = ("--limit", "64")  # a smoke run (--max-steps): images per set for detect and attack


def steps(profile: str, out: Path, tiny: bool) -> list[Step]:
    """Per model: train, train-ae, detect (every detector, every OOD set), attack fgsm, attack pgd."""
    p = PROFILES[profile]
    epochs, ae_epochs = (1, 1) if tiny else (p.epochs, p.ae_epochs)
    limit = TINY_LIMIT if tiny else ()
    # tiny: a small ODIN grid, and knn's k below the 160 training images a --limit 40 run fits on
    grid = (
        ("--grid", "--grid-T", "1,1000", "--grid-eps", "0,0.002", "--grid-knn-k", "1,10")
        if tiny
        else ("--grid",)
    )
    # the built-in ones, every profile: a fixed recipe (a --grid passes over the training set once per distinct
    # fit, not once per grid point: detection.search_hyperparameter)
    detectors = ",".join(d.name for d in methods.DETECTORS)
    oods = tuple(a for spec in p.ood for a in ("--ood", spec))
    attack, eps = p.adversarial
    variants = {
        "base": (),
        "adv": ("--adversarial", attack, "--eps", eps),
        "oe": ("--outlier-exposure", p.oe),
    }
    minutes = p.minutes or {}
    cpu = {} if tiny else p.cpu_minutes or {}  # measured on the profile's steps, not on the shrunk ones
    stop = stopping(p, tiny)
    result = []
    for m, options in variants.items():
        train, ae, model = f"{m}-train", f"{m}-ae", str(out / f"{m}-train")
        result += [
            Step(
                train,
                ("train", "--dataset", p.id, *p.model, "--epochs", str(epochs), *stop, *options, *p.data),
                minutes=minutes.get(train),
                cpu_minutes=cpu.get(train),
            ),
            Step(
                ae,
                ("train-ae", "--encoder", model, "--epochs", str(ae_epochs), *stop, *p.data),
                needs=(train,),
                minutes=minutes.get("ae"),
                cpu_minutes=cpu.get("ae"),
            ),
            Step(
                f"{m}-detect",
                (
                    *("detect", "--model", model, *oods, "--method", detectors),
                    *("--autoencoder", str(out / ae), *grid, *limit, *p.data),
                ),
                resumable=False,
                needs=(train, ae),
                minutes=minutes.get("detect"),
                cpu_minutes=cpu.get("detect"),
                smoke=SMOKE_LIMIT,
            ),
        ]
        result += [
            Step(
                f"{m}-{a}",
                ("attack", "--model", model, "--method", a, "--eps", p.eps, *limit)
                + (("--steps", "2") if tiny and a == "pgd" else ())
                + p.data,
                resumable=False,
                needs=(train,),
                minutes=minutes.get(a),
                cpu_minutes=cpu.get(a),
                smoke=SMOKE_LIMIT,
            )
            for a in ATTACKS
        ]
    for seed in range(1, 1 if tiny else p.seeds):
        result += _seed_steps(p, out, seed, variants, limit, minutes, cpu)
    return result


def stopping(p: Profile, tiny: bool) -> tuple[str, ...]:
    """The profile's stopping rule as training options (none for the tiny steps' one epoch)."""
    return () if tiny or p.patience is None else ("--patience", str(p.patience))


def seed_attacks(p: Profile) -> tuple[str, ...]:
    """The attacks a further seed repeats: FGSM (its accuracy falls with ε) and adversarial training's attack."""
    return tuple(dict.fromkeys(("fgsm", p.adversarial[0])))


def seeded(name: str, seed: int) -> str:
    """A step's name for a further training seed (``seed`` ≥ 1): ``base-fgsm-s1``."""
    return f"{name}-s{seed}"


def _seed_steps(
    p: Profile, out: Path, seed: int, variants: Mapping[str, tuple[str, ...]], limit: tuple[str, ...],
    minutes: Mapping[str, float], cpu: Mapping[str, float],
) -> list[Step]:  # fmt: skip
    """One further training seed: each model trained again with ``--seed``, then only the steps that the
    findings comparing models read (detect with ``SEED_DETECTORS`` for plain and exposed, attacks for plain
    and robust)."""
    oods = tuple(a for spec in p.ood for a in ("--ood", spec))
    result = []
    for m, options in variants.items():
        train = seeded(f"{m}-train", seed)
        model = str(out / train)
        result.append(
            Step(
                train,
                (
                    "train",
                    "--dataset",
                    p.id,
                    *p.model,
                    "--epochs",
                    str(p.epochs),
                    *stopping(p, False),
                    *options,
                    "--seed",
                    str(seed),
                    *p.data,
                ),
                minutes=minutes.get(f"{m}-train"),
                cpu_minutes=cpu.get(f"{m}-train"),
            )
        )
        if m in ("base", "oe"):
            result.append(
                Step(
                    seeded(f"{m}-detect", seed),
                    (
                        "detect",
                        "--model",
                        model,
                        *oods,
                        "--method",
                        ",".join(SEED_DETECTORS),
                        *limit,
                        *p.data,
                    ),
                    resumable=False,
                    needs=(train,),
                    minutes=minutes.get("detect"),
                    cpu_minutes=cpu.get("seed-detect"),
                    smoke=SMOKE_LIMIT,
                )
            )
        if m in ("base", "adv"):
            result += [
                Step(
                    seeded(f"{m}-{a}", seed),
                    ("attack", "--model", model, "--method", a, "--eps", p.eps, *limit, *p.data),
                    resumable=False,
                    needs=(train,),
                    minutes=minutes.get(a),
                    cpu_minutes=cpu.get(a),
                    smoke=SMOKE_LIMIT,
                )
                for a in seed_attacks(p)
            ]
    return result


def seed_folders(out: Path, step: str) -> list[Path]:
    """A step's run folder and those of its further seeds that ran (``seeded``), in seed order."""
    further = [f for f in Path(out).glob(f"{step}-s*") if f.name.rsplit("-s", 1)[1].isdigit()]
    return [Path(out) / step, *sorted(further, key=lambda f: int(f.name.rsplit("-s", 1)[1]))]


#### Reading the run folders ####


def metrics(out: Path, step: str) -> dict[str, Any]:
    """A child's metrics.json ({} when the step has not run)."""
    return read_run_file(out / step)


def config(out: Path, step: str) -> dict[str, Any]:
    """A child's options (config.json's config; {} when the step has not run)."""
    return read_run_file(out / step, "config.json").get("config", {})


def accuracy_at(rows: Sequence[Mapping[str, float]] | None, eps: float) -> float | None:
    """An attack run's accuracy at ε (None when it was not measured there)."""
    return next((r["accuracy"] for r in rows or () if abs(r["eps"] - eps) < 1e-9), None)


#### Findings: each a claim judged by its interval, unchecked (–) when a run is missing ####

RISE = 0.02  # how much accuracy may rise from one ε to the next and still "never rise" (a paired interval)


def _auroc(out: Path, step: str, method: str, ood: str) -> Any:
    """A detector's per-example AUROC pseudo-outcomes on ``ood`` in a detect step (None when missing)."""
    from lab4_ood.outcomes import SETS, auroc_arm

    return auroc_arm(out / step, method, metrics(out, step).get(SETS) or [], ood)


def _aurocs(out: Path, step: str, method: str, ood: str) -> Any:
    """The same over the step's training seeds (``seed_folders``): (seeds, examples); None when the first seed's
    are missing. A further seed without them, or scored on other examples, is left out."""
    import numpy as np

    first = _auroc(out, step, method, ood)
    if first is None:
        return None
    rows = [first] + [_auroc(out, f.name, method, ood) for f in seed_folders(out, step)[1:]]
    return np.stack([r for r in rows if r is not None and r.shape == first.shape])


def _both(text: str, claim: Claim, a: Any, b: Any, labels: tuple[str, str]) -> Finding:
    if a is None or b is None:
        return unchecked(text)
    return judge_outcomes(text, claim, a, b, labels)


def beats_chance(out: Path, ood: str | None, step: str = "base-detect") -> Finding:
    """Every detector's AUROC on ``ood`` is above 0.5: its per-example AUROC pseudo-outcomes against an arm
    scoring 0.5 on every example."""
    text = f"every detector beats chance (AUROC > 0.5) on {ood or 'the near OOD set'}"
    detectors = list(metrics(out, step).get("results") or {})
    if ood is None or not detectors:
        return unchecked(text)
    parts = []
    for m in detectors:
        arm = _auroc(out, step, m, ood)
        chance = None if arm is None else arm * 0 + 0.5
        parts.append(_both(text, Claim("better"), arm, chance, (f"{m} AUROC", "chance")))
    return every(text, parts)


def energy_beats_msp(out: Path, step: str = "base-detect") -> Finding:
    text = "energy beats MSP (AUROC) on every OOD set"
    sets = (metrics(out, step).get(SETS) or [])[1:]
    parts = [
        _both(
            text,
            Claim("better"),
            _aurocs(out, step, "energy", o),
            _aurocs(out, step, "msp", o),
            (f"energy on {o}", f"MSP on {o}"),
        )
        for o in sets
    ]
    return every(text, parts) if parts else unchecked(text)


def falls_with_eps(out: Path, step: str, attack: str = "FGSM") -> Finding:
    """From each ε to the next the accuracy does not rise by more than ``RISE`` (paired, per image)."""
    text = f"{attack} accuracy falls as ε grows (never rises by more than {RISE:g} from one ε to the next)"
    grid = sorted(r["eps"] for r in metrics(out, step).get("rows") or [])
    if len(grid) < 2:
        return unchecked(text)
    folder = seed_folders(out, step)
    parts = [
        judge(
            text,
            Claim("better", -RISE),
            Arm(f"ε={lo:g}", folder, eps_name(lo)),
            Arm(f"ε={hi:g}", folder, eps_name(hi)),
        )
        for lo, hi in itertools.pairwise(grid)
    ]
    return every(text, parts)


def adversarial_training_helps(out: Path, eps: float | None, attack: str) -> Finding:
    """The adversarially trained model is more accurate than the plain one under ``attack`` at the training ε,
    image by image on the same test images."""
    text = "adversarial training raises accuracy at the training ε"
    if eps is None:
        return unchecked(text)
    name = eps_name(eps)
    return judge(
        text,
        Claim("better"),
        Arm(f"robust, {attack.upper()} ε={eps:g}", seed_folders(out, f"adv-{attack}"), name),
        Arm("plain", seed_folders(out, f"base-{attack}"), name),
    )


def outlier_exposure_helps(out: Path) -> Finding:
    text = "outlier exposure raises MSP AUROC on every OOD set"
    sets = (metrics(out, "base-detect").get(SETS) or [])[1:]
    parts = [
        _both(
            text,
            Claim("better"),
            _aurocs(out, "oe-detect", "msp", o),
            _aurocs(out, "base-detect", "msp", o),
            (f"exposed on {o}", f"plain on {o}"),
        )
        for o in sets
    ]
    return every(text, parts) if parts else unchecked(text)


#### The report ####


def _commands(out: Path, steps: Sequence[Step], kinds: Sequence[str]) -> list[str]:
    return [s.command_line("lab4", out) for s in steps if s.name.split("-", 1)[1].rsplit("-s", 1)[0] in kinds]


def _images(out: Path, *names: str) -> list[Path]:
    return [out / n for n in names if (out / n).is_file()]


def classifiers_section(out: Path, steps: Sequence[Step]) -> Section:
    adv = config(out, "adv-train")
    eps = adv.get("eps")
    rows = []
    for m, label in MODELS.items():
        trained, ae = metrics(out, f"{m}-train"), metrics(out, f"{m}-ae")
        rows.append(
            [
                label,
                trained.get("test_accuracy"),
                accuracy_at(metrics(out, f"{m}-fgsm").get("rows"), eps) if eps is not None else None,
                ae.get("test_mse"),
                trained.get("parameters"),
                trained.get("epochs"),
            ]
        )
    eps_label = f"FGSM ε={fmt(eps)}" if eps is not None else "FGSM at the training ε"
    table = Table(["model", "test accuracy", eps_label, "autoencoder test MSE", "parameters", "epochs"], rows)
    oe = config(out, "oe-train").get("outlier_exposure")
    text = (
        f"Three classifiers on {config(out, 'base-train').get('dataset', 'the ID set')}: plain; adversarially "
        f"trained ({adv.get('adversarial', '?')}, ε={fmt(eps)}, loss α·CE(x) + (1−α)·CE(x_adv)); and with outlier "
        f"exposure on the training split of `{oe}`. Each gets a decoder on its frozen features (`train-ae`), for "
        "the `recon` detector."
    )
    images = _images(out, "base-train/learning_curves.png", "base-ae/reconstructions.png")
    return Section("Classifiers", text, _commands(out, steps, ["train", "ae"]), [table], images)


def detection_table(label: str, summary: Mapping[str, Any]) -> Table:
    results = summary.get("results", {})
    oods = list(dict.fromkeys(o for r in results.values() for o in r))
    columns = ["detector", *(f"{k} {o}" for o in oods for k in ("AUROC", "FPR95"))]
    rows = [[m, *(r.get(o, {}).get(k) for o in oods for k in ("auroc", "fpr95"))] for m, r in results.items()]
    odin = summary.get("odin", {})
    caption = (
        f"{label}: ID accuracy {fmt(summary.get('id_accuracy'))}; ODIN at T={fmt(odin.get('temperature'))}, "
        f"ε={fmt(odin.get('eps'))} (picked on held-out data)"
    )
    return Table(columns, rows, caption, headline=columns[1] if oods else None)


def detection_section(out: Path, steps: Sequence[Step]) -> Section:
    summaries = {m: metrics(out, f"{m}-detect") for m in MODELS}
    tables = [detection_table(MODELS[m], s) for m, s in summaries.items() if s.get("results")]
    base = summaries["base"].get("results")
    oods = config(out, "base-detect").get("ood") or []
    images = []
    if base:
        from dla_core import plots

        aurocs = {m: {o: {"auroc": r["auroc"]} for o, r in per.items()} for m, per in base.items()}
        ranking = plots.ranking(
            {"detectors on the plain model": aurocs},
            out / "figures" / "detectors_auroc.png",
            key="auroc",
            xlabel="AUROC (0.5 = chance)",
            reference=0.5,
        )
        caption = "AUROC of every detector on the plain model, best on top; dotted: chance (0.5)."
        images.append(Figure(ranking, caption))
    images += _images(
        out, "base-detect/scores_msp.png", "base-detect/scores_energy.png", "base-detect/roc_energy.png"
    )
    text = (
        "Every registered detector scores the ID test split and each OOD test set (higher = more ID; ID is the "
        "positive class; FPR95 = OOD accepted at 95% ID recall). The plots are the plain model's."
    )
    findings = [beats_chance(out, oods[0] if oods else None), energy_beats_msp(out)]
    return Section("OOD detection", text, _commands(out, steps, ["detect"]), tables, images, findings)


def attack_section(out: Path, steps: Sequence[Step]) -> Section:
    rows = {(a, m): metrics(out, f"{m}-{a}").get("rows") or [] for a in ATTACKS for m in MODELS}
    grid = sorted({r["eps"] for rs in rows.values() for r in rs})
    columns = ["ε", *(f"{a.upper()} {MODELS[m]}" for a, m in rows)]
    table = Table(
        columns, [[e, *(accuracy_at(rs, e) for rs in rows.values())] for e in grid], "test accuracy"
    )
    images = []
    if grid:
        from dla_core import plots

        panels = {
            a.upper(): {
                MODELS[m]: ([r["eps"] for r in rs], [r["accuracy"] for r in rs])
                for (b, m), rs in rows.items()
                if b == a and rs
            }
            for a in ATTACKS
        }
        curves = plots.curve_panels(
            panels, out / "figures" / "accuracy_vs_eps.png", "ε (pixels in [0, 1])", "accuracy"
        )
        images.append(Figure(curves, "Test accuracy against ε, a panel per attack, a line per model."))
    images += _images(out, "base-pgd/adversarial_examples.png")
    adv = config(out, "adv-train")
    attack = adv.get("adversarial") or "fgsm"
    findings = [falls_with_eps(out, "base-fgsm"), adversarial_training_helps(out, adv.get("eps"), attack)]
    text = "Untargeted L∞ attacks on the test split, in [0, 1] pixel units; PGD starts at random and takes small steps."
    return Section("Adversarial attacks", text, _commands(out, steps, ATTACKS), [table], images, findings)


def outlier_exposure_section(out: Path, steps: Sequence[Step]) -> Section:
    base, exposed = metrics(out, "base-detect").get("results"), metrics(out, "oe-detect").get("results")
    oods = list(dict.fromkeys(o for r in (base or {}).values() for o in r))
    columns = [
        "OOD set",
        *(f"{d} {k} {w}" for d in ("MSP", "energy") for k in ("AUROC", "FPR95") for w in ("plain", "OE")),
    ]
    rows = [
        [
            o,
            *(
                (r or {}).get(d, {}).get(o, {}).get(k)
                for d in ("msp", "energy")
                for k in ("auroc", "fpr95")
                for r in (base, exposed)
            ),
        ]
        for o in oods
    ]
    oe = config(out, "oe-train").get("outlier_exposure")
    text = (
        f"The outlier-exposure model trained with λ·CE(f(x_ood), uniform) on the training split of `{oe}`; the OOD "
        "test sets are test splits, so a test set of the same name shares its distribution (not its images) with "
        "what exposure saw — the optimistic case; the other sets were never seen."
    )
    return Section(
        "Outlier exposure",
        text,
        [],
        [Table(columns, rows)],
        _images(out, "oe-detect/scores_msp.png"),
        [outlier_exposure_helps(out)],
    )


def sections(out: Path, steps: list[Step]) -> list[Section]:
    out = Path(out)
    return [
        classifiers_section(out, steps),
        detection_section(out, steps),
        attack_section(out, steps),
        outlier_exposure_section(out, steps),
    ]


RECIPE = Recipe(
    lab="lab4",
    title="lab4 — OOD detection and adversarial robustness",
    intro=(
        "Can a classifier tell when an input is not from its training distribution, and how easily is it fooled? "
        "A small CNN is trained on the in-distribution (ID) classes, then every detector of `lab4 detect` scores "
        "ID and OOD test images, and FGSM and PGD attack it at growing ε. The same tables follow for an "
        "adversarially trained model and for one trained with outlier exposure. Quick profile: scikit-learn's "
        "8×8 digits 0-4 as ID, digits 5-9 and noise (`fake`) as OOD, offline on a CPU. Full profile: CIFAR-10 "
        "as ID, CIFAR-100 people, MNIST and FakeData as OOD."
    ),
    steps=steps,
    sections=sections,
)
