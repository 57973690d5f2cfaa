"""Using a trained checkpoint: its batches of a dataset split, its evaluation, image files
classified, the confusion PNG.

Everything comes from the checkpoint itself: the network (``model_config``), its class names, the
normaliser fitted on its training data and the input size. This package sits above the engine
(whose evaluation loop, :func:`resnetlab.engine.evaluate.evaluate`, it uses) and beside
:mod:`resnetlab.weights` (which turns references into checkpoints): neither imports the other.
The modules: ``batches`` (a split as the checkpoint's net expects it), ``checkpoint``
(:func:`evaluate_checkpoint`), ``images`` (:func:`predict_images`) and ``confusion``
(:func:`save_confusion_png`).
"""

from resnetlab.evaluation.batches import checkpoint_batches
from resnetlab.evaluation.checkpoint import Evaluation, evaluate_checkpoint
from resnetlab.evaluation.confusion import save_confusion_png
from resnetlab.evaluation.images import load_image, predict_images

__all__ = [
    "Evaluation",
    "checkpoint_batches",
    "evaluate_checkpoint",
    "load_image",
    "predict_images",
    "save_confusion_png",
]
