"""Lab 4: out-of-distribution detection, adversarial attacks, robust training."""

__version__ = "0.1.0"
