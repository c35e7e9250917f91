"""OOD detectors, one module per family (``logits``, ``features``, ``shaping``) over the shared ``base``.

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
)
from lab4_ood.detectors.features import FDBD, KNN, RMDS, Mahalanobis, Reconstruction, ViM
from lab4_ood.detectors.logits import GEN, MSP, ODIN, Energy, Entropy, MaxLogit
from lab4_ood.detectors.shaping import ASH, ASH_VARIANTS, DICE, SCALE, ReAct, ShapedEnergy

__all__ = [
    "ASH", "ASH_VARIANTS", "DICE", "FDBD", "GEN", "KNN", "MSP", "ODIN", "RMDS", "SCALE", "ClassStatistics",
    "Detector", "Energy", "Entropy", "Mahalanobis", "MaxLogit", "ReAct", "Reconstruction", "Reservoir",
    "ShapedEnergy", "ViM", "energy", "features_and_logits", "head_of", "make_detector", "mean_feature",
    "score_set", "spec_of", "top_k_count",
]  # fmt: skip
