"""lt_lightning: deep long-tailed image classification on PyTorch Lightning.

Parts follow the taxonomy of "Deep Long-Tailed Learning: A Survey" (Zhang et al., TPAMI 2023):
``backbones`` (feature extractors), ``heads`` (classifier design), ``losses`` (cost-sensitive learning and logit
adjustment), ``data`` (long-tailed datasets, samplers), ``callbacks`` (methods that change training over time),
``metrics`` (per-class and per-shot accuracy). :class:`LongTailModule` hosts them.
"""

from lt_lightning.output import ModelOutput

__version__ = "0.1.0"

__all__ = ["ModelOutput", "__version__"]
