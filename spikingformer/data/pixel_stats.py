"""Per-channel pixel mean/std of each dataset, in one dependency-free place.

The data pipeline normalises with them and the models' timm ``pretrained_cfg`` declares them (so
``timm.data.resolve_data_config`` gives a CIFAR model the CIFAR statistics); keeping them here lets
``spikingformer.models`` read them without importing the data package, which itself builds models.
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

IMAGENET_MEAN = IMAGENET_DEFAULT_MEAN
IMAGENET_STD = IMAGENET_DEFAULT_STD
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
#: Event frames hold raw event counts: no normalisation (mean 0, std 1 per polarity channel).
DVS_MEAN = (0.0, 0.0)
DVS_STD = (1.0, 1.0)
