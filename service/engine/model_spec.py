"""What a sentence-transformers folder says about how to embed: the transformer's folder,
max sequence length, pooling, Dense layers, normalisation and prompts."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from array_api_compat import array_namespace

log = logging.getLogger(__name__)

POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
ACTIVATIONS = ("Identity", "Tanh")  # the Dense activations sentence-transformers models use


class ModelFolderError(ValueError):
    """The folder is not a model this service can serve."""


@dataclass(frozen=True)
class DenseLayer:
    """A sentence-transformers Dense module: y = activation(x @ weight.T + bias).

    Works on numpy arrays or, after `to(...)`, on tensors of another array library (torch
    on the model's device)."""

    weight: Any  # [out, in]
    bias: Any | None  # [out]
    activation: str = "Identity"

    def __call__(self, x):
        """x [batch, in] -> [batch, out], same array library as x."""
        y = x @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return array_namespace(y).tanh(y) if self.activation == "Tanh" else y

    def to(self, convert: Callable[[np.ndarray], Any]) -> DenseLayer:
        """The same layer with its arrays converted (e.g. to torch tensors on a device)."""
        bias = None if self.bias is None else convert(self.bias)
        return replace(self, weight=convert(self.weight), bias=bias)


@dataclass(frozen=True)
class ModelSpec:
    path: Path
    transformer_path: Path
    max_seq_length: int
    pooling: tuple[str, ...]  # concatenated in this order, as sentence-transformers does
    include_prompt: bool = True
    dense: tuple[DenseLayer, ...] = ()
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str = "cosine"
    hidden_size: int = 0

    @property
    def dimension(self) -> int:
        if self.dense:
            return int(self.dense[-1].weight.shape[0])
        return self.hidden_size * len(self.pooling)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{path} is not valid JSON: {exc}") from exc


def _read_pooling(folder: Path) -> tuple[tuple[str, ...], bool]:
    config = _read_json(folder / "config.json")
    if "pooling_mode" in config and isinstance(config["pooling_mode"], str):
        modes = (config["pooling_mode"].removesuffix("_tokens").removesuffix("_token"),)
    else:
        modes = tuple(name for key, name in POOLING_KEYS.items() if config.get(key))
    if not modes:
        raise ModelFolderError(f"{folder}/config.json selects no pooling mode")
    return modes, bool(config.get("include_prompt", True))


def _read_dense(folder: Path) -> DenseLayer:
    config = _read_json(folder / "config.json")
    activation = str(config.get("activation_function", "Identity")).rsplit(".", 1)[-1]
    if activation not in ACTIVATIONS:
        raise ModelFolderError(f"{folder}: unsupported Dense activation {activation}")
    weights_file = folder / "model.safetensors"
    if weights_file.exists():
        from safetensors.numpy import load_file

        tensors = load_file(str(weights_file))
    else:
        import torch

        tensors = {
            k: v.float().numpy()
            for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu").items()
        }
    weight = tensors["linear.weight"].astype(np.float32)
    bias = tensors.get("linear.bias")
    return DenseLayer(weight, None if bias is None else bias.astype(np.float32), activation)


def load_model_spec(path: str | Path) -> ModelSpec:
    """Read modules.json and the module configs of a local sentence-transformers folder.
    A plain transformers folder (no modules.json) gets mean pooling, as
    sentence-transformers gives it."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"model folder not found: {path}")
    modules = _read_json(path / "modules.json")
    transformer_path, pooling, include_prompt = path, ("mean",), True
    dense: list[DenseLayer] = []
    normalize = False
    for module in modules or []:
        kind = module["type"].rsplit(".", 1)[-1]
        folder = path / module.get("path", "")
        if kind == "Transformer":
            transformer_path = folder
        elif kind == "Pooling":
            pooling, include_prompt = _read_pooling(folder)
        elif kind == "Dense":
            dense.append(_read_dense(folder))
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelFolderError(f"{path}: module type {module['type']} is not supported")
    st_config = _read_json(transformer_path / "sentence_bert_config.json")
    hf_config = _read_json(transformer_path / "config.json")
    max_positions = int(hf_config.get("max_position_embeddings", 512))
    if hf_config.get("model_type") in {"xlm-roberta", "roberta", "camembert"}:
        max_positions -= 2  # positions are offset by padding_idx + 1
    max_seq_length = int(st_config.get("max_seq_length") or min(max_positions, 512))
    model_config = _read_json(path / "config_sentence_transformers.json")
    return ModelSpec(
        path=path,
        transformer_path=transformer_path,
        max_seq_length=max_seq_length,
        pooling=pooling,
        include_prompt=include_prompt,
        dense=tuple(dense),
        normalize=normalize,
        prompts=dict(model_config.get("prompts") or {}),
        default_prompt_name=model_config.get("default_prompt_name"),
        similarity_fn_name=model_config.get("similarity_fn_name") or "cosine",
        hidden_size=int(hf_config.get("hidden_size") or hf_config.get("dim") or 0),
    )


def resolve_model_path(name_or_path: str) -> Path:
    """A local folder as is; a hub id through the Hugging Face cache (downloads only where
    the hub is reachable, and fails with a clear message where it is not)."""
    local = Path(name_or_path).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many kinds
        raise ModelFolderError(
            f"model '{name_or_path}' is neither a local folder nor reachable on the hub ({exc})"
        ) from exc
