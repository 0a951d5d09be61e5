"""The model zoo. ``MostPopular`` is the baseline; attention models register by name."""

from jaxrec.models.popular import MostPopular

__all__ = ["MostPopular"]
