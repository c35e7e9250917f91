"""Lab 2: DistilBERT sentiment on Rotten Tomatoes: features, fine-tuning, LoRA, evaluation."""

__version__ = "0.1.0"
