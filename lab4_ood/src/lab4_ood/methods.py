"""The names lab4's commands offer for ``--method`` and ``--adversarial``, without heavy imports.

The registries themselves (``detectors.DETECTORS``, ``attacks.ATTACKS``) hold classes and functions over torch,
and importing them costs a torch import that ``lab4 --help`` should not pay. So the CLI takes the built-in names,
and each detector's one-line summary, from the table here; once a registry module is loaded (a plug-in that
registers a method has imported it), the registry itself answers, plug-ins included. A test keeps this table
equal to the registries.
"""

from __future__ import annotations

import sys

# --method of `lab4 detect`: name → the first line of the detector class's docstring (detectors.summary)
DETECTORS = {
    "msp": "max softmax probability",
    "maxlogit": "max logit",
    "energy": "logsumexp of the logits (energy)",
    "odin": "max softmax at --T after an --eps step",
    "mahalanobis": "distance to the nearest class mean",
    "recon": "reconstruction error (--autoencoder)",
    "knn": "−distance to the k-th nearest ID feature (--knn-k)",
    "vim": "energy − α·‖residual‖ (virtual logit, --vim-dim)",
    "rmds": "relative Mahalanobis distance to the nearest class",
    "gen": "−generalized entropy of the top --gen-m probabilities (--gen-gamma)",
    "entropy": "−entropy of the softmax",
    "react": "energy after clipping features at a percentile (--react-percentile)",
    "ash": "energy after activation shaping (--ash-variant, --ash-percentile)",
    "scale": "energy after scaling features by exp(sum / top sum) (--scale-percentile)",
    "dice": "energy of a sparsified last layer (--dice-p)",
    "fdbd": "feature distance to the decision boundaries",
    "nci": "cosine to the predicted class's weights + α‖z‖₁ (NCI)",
    "nac": "neuron activation coverage of the penultimate features (NAC)",
    "weiper": "density KL of features and perturbed class projections (WeiPer+KLD)",
    "adascale": "energy after SCALE at a per-image percentile (AdaSCALE)",
}
# --method of `lab4 attack`, --adversarial of `lab4 train`
ATTACKS = (
    "fgsm",
    "pgd",
    "bim",
    "mifgsm",
    "pgd-l2",
    "apgd",
    "apgd-dlr",
    "cw",
    "deepfool",
    "square",
    "autoattack",
)
# the attacks whose ε is an L2 norm (any finite ε ≥ 0); every other attack's L∞ radius lies in [0, 1]
L2_ATTACKS = ("pgd-l2", "cw", "deepfool")


def detector_summaries() -> dict[str, str]:
    """Every detector's name and one-line summary: the registry's when loaded, else the built-in table."""
    registry = sys.modules.get("lab4_ood.detectors")
    if registry is None:
        return dict(DETECTORS)
    return {name: registry.summary(cls) for name, cls in registry.DETECTORS.items()}


def attack_names() -> tuple[str, ...]:
    """Every attack's name: the registry's when loaded, else the built-in table."""
    registry = sys.modules.get("lab4_ood.attacks")
    return ATTACKS if registry is None else tuple(registry.ATTACKS)
