"""Shared test helpers."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def random_official_state(layout: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the released layout's keys and shapes, random but well-conditioned."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif key.endswith("running_var"):
            state[key] = torch.ones(shape)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = torch.zeros(shape)
        elif key == "mesh_renderer.tri":
            state[key] = torch.zeros(shape, dtype=torch.int32)
        elif key.endswith(("weight_u", "weight_v")):
            continue  # set below from the weight they normalise
        else:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod().item())) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
    for key in [k for k in layout if k.endswith("weight_orig")]:
        # u, v from power iteration, as a trained spectral norm holds them (sigma > 0)
        mat = state[key].flatten(1)
        u = torch.randn(mat.shape[0], generator=g)
        for _ in range(3):
            v = torch.nn.functional.normalize(mat.t() @ u, dim=0)
            u = torch.nn.functional.normalize(mat @ v, dim=0)
        state[key[: -len("orig")] + "u"], state[key[: -len("orig")] + "v"] = u, v
    return {k: state[k] for k in layout}


def official_layout(fixtures: Path, which: str) -> dict[str, list[int]]:
    return json.loads((fixtures / "official_state_dict_layout.json").read_text())[which]


def write_official_checkpoint(fixtures: Path, guidance: str, path: Path) -> Path:
    torch.save(
        {
            "generator": random_official_state(official_layout(fixtures, f"generator/{guidance}")),
            "discriminator": random_official_state(official_layout(fixtures, "discriminator"), seed=1),
            "global_step": 270000,
        },
        path,
    )
    return path


class Payload:
    """A pickled object whose unpickling calls open(marker, "w"): the marker exists when a loader ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))
