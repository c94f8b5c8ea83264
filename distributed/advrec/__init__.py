"""advrec: adversarial training for embedding-heavy recommenders, on Ray."""

__version__ = "0.1.0"
