"""OOD detectors, one module per family (``logits``, ``features``, ``shaping``, ``recent``: the OpenOOD v1.5
leaderboard's newest) over the shared ``base``.

Each is declared in ``lab4_ood.methods`` (its name, summary, options and traits) and implemented here; this
package only gathers the names for code that builds or tests detectors directly.
"""

from lab4_ood.detectors.base import (
    ClassStatistics,
    Detector,
    Reservoir,
    energy,
    features_and_logits,
    head_of,
    make_detector,
    mean_feature,
    score_set,
    spec_of,
    top_k_count,
    views_of_set,
)
from lab4_ood.detectors.features import FDBD, KNN, RMDS, Mahalanobis, Reconstruction, ViM
from lab4_ood.detectors.logits import GEN, MSP, ODIN, Energy, Entropy, MaxLogit
from lab4_ood.detectors.recent import NAC, NCI, AdaSCALE, WeiPer
from lab4_ood.detectors.shaping import ASH, ASH_VARIANTS, DICE, SCALE, ReAct, ShapedEnergy

__all__ = [
    "ASH",
    "ASH_VARIANTS",
    "DICE",
    "FDBD",
    "GEN",
    "KNN",
    "MSP",
    "NAC",
    "NCI",
    "ODIN",
    "RMDS",
    "SCALE",
    "AdaSCALE",
    "ClassStatistics",
    "Detector",
    "Energy",
    "Entropy",
    "Mahalanobis",
    "MaxLogit",
    "ReAct",
    "Reconstruction",
    "Reservoir",
    "ShapedEnergy",
    "ViM",
    "WeiPer",
    "energy",
    "features_and_logits",
    "head_of",
    "make_detector",
    "mean_feature",
    "score_set",
    "spec_of",
    "top_k_count",
    "views_of_set",
]  # fmt: skip
