"""Models: CIFAR-style ResNets, the registry (torchvision families included), transfer learning.

No ray or mlflow here: models are built the same way in a unit test and on a cluster worker.
"""

from orchestrator.models.parts import ModelParts, model_parts
from orchestrator.models.transfer import apply_init, freeze_for_transfer, set_frozen_bn_eval
from orchestrator.models.zoo import count_parameters, create_model, list_models

__all__ = [
    "ModelParts",
    "apply_init",
    "count_parameters",
    "create_model",
    "freeze_for_transfer",
    "list_models",
    "model_parts",
    "set_frozen_bn_eval",
]
