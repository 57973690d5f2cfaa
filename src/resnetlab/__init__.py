"""resnetlab: deep residual learning exactly as He et al. (2015) define it."""

from resnetlab.models import ResNet, build_model, list_models, model_info
from resnetlab.weights.hub import create_model

__version__ = "0.1.0"

__all__ = ["ResNet", "__version__", "build_model", "create_model", "list_models", "model_info"]
