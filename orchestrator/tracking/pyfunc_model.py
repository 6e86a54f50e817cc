"""The best ensemble as an MLflow pyfunc model that serves averaged predictions.

Input: images as a numpy array (N, C, H, W), raw pixels as the data sets store them (uint8
0..255, or floats on the same scale). Output: class probabilities (N, classes), the weighted
mean of each component network's softmax (one component for a weight-space ensemble).
Normalisation (the study's per-channel mean/std) happens inside, so callers send raw images.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

import orchestrator

PIP_REQUIREMENTS = [
    f"torch=={torch.__version__.split('+')[0]}",
    "torchvision",
    "numpy",
    "pydantic>=2.6",
    "pyyaml",
    f"mlflow=={mlflow.__version__}",
]
MANIFEST = "manifest"
PREDICT_BATCH = 256


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from orchestrator.config import StudySpec
        from orchestrator.models import create_model

        manifest = json.loads(Path(context.artifacts[MANIFEST]).read_text())
        spec = StudySpec.model_validate(manifest["spec"])
        shape = manifest["input"]
        self.mean = torch.tensor(shape["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(shape["std"]).view(1, -1, 1, 1)
        self.networks: list[tuple[torch.nn.Module, float]] = []
        for component in manifest["components"]:
            model = create_model(
                spec.model,
                in_channels=shape["channels"],
                image_size=shape["image_size"],
                num_classes=shape["num_classes"],
            )
            weights = torch.load(
                context.artifacts[component["artifact"]], map_location="cpu", weights_only=True
            )
            model.load_state_dict(weights["model"] if "model" in weights else weights)
            self.networks.append((model.eval(), float(component["weight"])))
        self.total = sum(w for _, w in self.networks)

    @torch.no_grad()
    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> np.ndarray:
        images = torch.as_tensor(np.asarray(model_input), dtype=torch.float32)
        if images.ndim != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
        out = []
        for start in range(0, len(images), PREDICT_BATCH):
            x = (images[start : start + PREDICT_BATCH] / 255.0 - self.mean) / self.std
            probs = sum(w * torch.softmax(net(x), dim=1) for net, w in self.networks)
            out.append((probs / self.total).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def log_ensemble_model(
    spec: dict[str, Any],
    input_info: dict[str, Any],
    components: list[tuple[dict[str, Any], float]],
    name: str = "ensemble",
):
    """Log a pyfunc model into the active run; components: (model.pt dict, weight)."""
    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
    with tempfile.TemporaryDirectory(prefix="ensemble-pyfunc-") as tmp:
        artifacts, listed = {}, []
        for i, (weights, weight) in enumerate(components):
            key = f"component_{i:03d}"
            path = Path(tmp) / f"{key}.pt"
            torch.save({"model": weights.get("model", weights)}, path)
            artifacts[key] = str(path)
            listed.append({"artifact": key, "weight": weight})
        manifest = Path(tmp) / "manifest.json"
        manifest.write_text(json.dumps({"spec": spec, "input": input_info, "components": listed}))
        artifacts[MANIFEST] = str(manifest)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=EnsemblePyfunc(),
            artifacts=artifacts,
            # The model needs this package's model registry to rebuild its networks.
            code_paths=[str(Path(orchestrator.__file__).parent)],
            pip_requirements=PIP_REQUIREMENTS,
        )
