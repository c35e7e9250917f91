"""Lab 1: plain vs residual networks as depth grows (He et al., 2016), transfer learning, distillation."""

__version__ = "0.1.0"
