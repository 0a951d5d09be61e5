"""jaxrec: attention-based recommenders in JAX/Flax (see README.md and DESIGN.md)."""

__version__ = "0.1.0"
