"""torch.hub entry points: every registered resnetlab network, e.g.
``torch.hub.load("OWNER/resnetlab", "resnet20", source="github")`` (freshly initialised) or
``torch.hub.load("OWNER/resnetlab", "resnet56", pretrained=True)`` (the net's default weights, see
``resnetlab models --pretrained``).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))

from resnetlab.models import list_models
from resnetlab.weights.hub import builder

dependencies = ["torch", "torchvision"]

globals().update({name: builder(name) for name in list_models()})
