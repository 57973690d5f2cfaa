"""Paper-exact ResNets: blocks, the one ResNet class, and the registry."""

from resnetlab.models.blocks import BasicBlock, Bottleneck, ZeroPadShortcut
from resnetlab.models.params import count_params
from resnetlab.models.resnet import ResNet
from resnetlab.models.zoo import ModelInfo, build_model, list_models, model_info

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ModelInfo",
    "ResNet",
    "ZeroPadShortcut",
    "build_model",
    "count_params",
    "list_models",
    "model_info",
]
