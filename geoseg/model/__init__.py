"""Model packages: the card (pure JSON), the architecture registry and safe loading.

Importing this package does not import torch; ``registry``, ``package.load_model``
and ``runtime`` do.
"""

from geoseg.model.card import ClassInfo, ModelCard, Normalization

__all__ = ["ClassInfo", "ModelCard", "Normalization"]
