"""Reading the weight files of pretrained backbones, which users bring, with every key checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from gdpw.common.errors import CheckpointError

M = TypeVar("M", bound=nn.Module)


def read_weights(path: str | os.PathLike[str], what: str, hint: str) -> Mapping[str, Any]:
    """The state dict in ``path`` (``what``: "VGG-19 weights", say); ``FileNotFoundError`` with ``hint`` when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} ({hint})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt files raise many types
        raise CheckpointError(f"{path}: not readable {what} ({type(err).__name__})") from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not {what}")
    return state


def load_checked(net: M, state: Mapping[str, Any], path: str | os.PathLike[str], what: str, prefix: str = "") -> M:
    """Load the entries of ``net``'s state dict that start with ``prefix`` from ``state`` (other
    entries of the file are ignored); the first missing or mis-shaped key is named."""
    own = net.state_dict()
    picked = {}
    for key, ref in own.items():
        if not key.startswith(prefix):
            continue
        if key not in state:
            raise CheckpointError(f"{path}: not {what} weights (missing {key!r})")
        if not torch.is_tensor(state[key]) or tuple(state[key].shape) != tuple(ref.shape):
            shape = tuple(state[key].shape) if torch.is_tensor(state[key]) else type(state[key]).__name__
            raise CheckpointError(f"{path}: {what} {key!r} has shape {shape}, expected {tuple(ref.shape)}")
        picked[key] = state[key]
    net.load_state_dict({**own, **picked})
    return net.eval()
