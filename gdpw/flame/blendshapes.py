"""MediaPipe's 52 blendshape scores as observations of a head model's expression and jaw.

A ``BlendshapeMap`` is a linear map, learned where the truth is known (``scripts/fit_blendshape_map.py``
renders the demo head with known parameters and reads its blendshapes back), from the scores to
the model's first expression coefficients and its jaw opening. The fitter pulls its estimate
towards the prediction (``FitConfig.blendshape_weight``) beside fitting the landmarks. The demo
head ships its map (``gdpw/assets/demo_blendshapes.npz``, with its held-out accuracy), used when
given (``--blendshape-map``): measured on real drivers it does not help yet (``docs/real_follow.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdpw.common.errors import FlameFileError

DEMO_BLENDSHAPES = Path(__file__).resolve().parents[1] / "assets" / "demo_blendshapes.npz"
JAW = "jaw_open"


@dataclass(frozen=True)
class BlendshapeMap:
    names: tuple[str, ...]  # the blendshape names, in the weights' row order
    weights: np.ndarray  # (len(names) + 1, K): scores and a constant to targets
    targets: tuple[str, ...]  # the K targets: expression components, then "jaw_open"

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BlendshapeMap:
        path = Path(path)
        if not path.is_file():
            raise FlameFileError(f"blendshape map not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                out = cls(tuple(str(n) for n in z["names"]), np.asarray(z["weights"], np.float32),
                          tuple(str(t) for t in z["targets"]))
        except (OSError, ValueError, KeyError) as err:
            raise FlameFileError(f"{path}: not a blendshape map ({type(err).__name__}: {err})") from None
        if out.weights.shape != (len(out.names) + 1, len(out.targets)):
            raise FlameFileError(f"{path}: weights {out.weights.shape} do not fit {len(out.names)} names and "
                                 f"{len(out.targets)} targets")
        return out

    @property
    def n_expression(self) -> int:
        return len(self.targets) - (JAW in self.targets)

    def predict(self, scores: dict[str, float]) -> np.ndarray:
        """(K,) expression components (and the jaw opening, last) from one face's scores."""
        x = np.array([scores.get(n, 0.0) for n in self.names] + [1.0], dtype=np.float32)
        return x @ self.weights
