"""ONNX export: the generator's two graphs, checked by onnxruntime against PyTorch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gdpw.cli.main import main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_export_the_demo_generator_and_check_it(tmp_path: Path, capsys) -> None:
    assert main(["export", "--onnx", str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "onnx" / "encode.onnx").is_file() and (tmp_path / "onnx" / "decode.onnx").is_file()
    diff = float(re.search(r"max \|diff\| ([0-9.e+-]+)", out).group(1))  # type: ignore[union-attr]
    assert diff <= 1e-4  # batch 3 against the batch-2 example the graphs were exported with: the batch is dynamic
