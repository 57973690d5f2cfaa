"""Using trained weights: the registry of pretrained weights, one loader for every way of naming
weights, and what is done with them (export, convert, the torch.hub entry points); evaluating and
classifying with them is :mod:`resnetlab.evaluation`.

A card (:class:`WeightsCard`, in :mod:`~resnetlab.weights.card`) says what a set of weights is: the
registered architecture, a tag, who published it under which licence, what it was trained on and
how its input is prepared, its accuracy on a named test set, the recipe, and where the file lives
with its SHA-256. The file is either inside the package (``resnetlab/pretrained/NAME-TAG.safetensors``
plus the ``.json`` that ``resnetlab export --format safetensors`` writes beside it) or at a URL; a
downloaded file that needs converting (another project's layout) is converted once into the cache.
The cards are :data:`~resnetlab.weights.registry.WEIGHTS`. A model's default (``pretrained=True``)
follows one rule on the cards' data (:func:`~resnetlab.weights.registry.default_rank`): ours trained
with the paper's recipe on the official data, else anyone's trained on the official data, else ours
on the JPEG copy.

Adding in-package weights from a finished run is one command, ``python
benchmarks/register_weights.py RUN --tag TAG``: it writes ``NAME-TAG.safetensors`` and its ``.json``
(as ``resnetlab export`` does), a model card ``NAME-TAG.md`` and the registry's card
``NAME-TAG.card.json``, which the registry reads. The file's SHA-256 is checked on every load, and
its config JSON must agree with the card (model, classes, input size, normalisation).

:func:`load_weights` (:mod:`~resnetlab.weights.loading`) turns any reference into the
checkpoint-like dict the engine consumes: a checkpoint file, a run directory, an exported or
converted directory or ``.safetensors`` file, ``pretrained:NAME[:TAG]``, or ``akamaster:NAME``.

The modules: ``card`` and ``registry`` (what weights there are), ``loading`` (references to
checkpoint dicts and nets), ``convert`` (other projects' checkpoints), ``export`` (safetensors and
ONNX releases), ``folding`` (inference-time rewrites) and ``hub`` (``create_model`` and the
torch.hub entry points).
"""

from resnetlab.weights.card import SCHEME, Accuracy, WeightsCard
from resnetlab.weights.loading import WEIGHTS_HELP, load_weights, output_dir, pretrained_model, weights_dir
from resnetlab.weights.registry import WEIGHTS, card_record, get_weights, list_weights

__all__ = [
    "SCHEME",
    "WEIGHTS",
    "WEIGHTS_HELP",
    "Accuracy",
    "WeightsCard",
    "card_record",
    "get_weights",
    "list_weights",
    "load_weights",
    "output_dir",
    "pretrained_model",
    "weights_dir",
]
