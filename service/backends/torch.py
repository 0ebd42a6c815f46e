"""PyTorch backend: the sentence-transformers Transformer module on CPU or CUDA
(fp16 on CUDA), with pooling and Dense on the same device."""

from __future__ import annotations

import logging

import numpy as np

from service.backends.base import Backend, BackendInfo
from service.engine.pooling import PoolingHead

log = logging.getLogger(__name__)


def torch_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class TorchBackend(Backend):
    def __init__(self, transformer_dir: str, device: str = "auto", threads: int = 0) -> None:
        import torch
        from transformers import AutoModel

        self.torch = torch
        self.device = torch_device(device)
        if threads:
            torch.set_num_threads(threads)
        model = AutoModel.from_pretrained(transformer_dir)
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.model = model.to(self.device, dtype=self.dtype).eval()
        accepted = self.model.forward.__code__.co_varnames
        self.takes_token_types = "token_type_ids" in accepted
        self.info = BackendInfo(
            name="torch",
            device=self.device,
            provider=f"torch-{self.device}",
            dtype=str(self.dtype).removeprefix("torch."),
        )
        self._head_source: PoolingHead | None = None
        self._head: PoolingHead | None = None
        log.info("torch backend on %s (%s)", self.device, self.info.dtype)

    def _inputs(self, input_ids, attention_mask, token_type_ids) -> dict:
        torch = self.torch
        kwargs = {
            "input_ids": torch.from_numpy(input_ids).to(self.device, non_blocking=True),
            "attention_mask": torch.from_numpy(attention_mask).to(self.device, non_blocking=True),
        }
        if self.takes_token_types:
            kwargs["token_type_ids"] = torch.from_numpy(token_type_ids).to(self.device)
        return kwargs

    def forward(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        with self.torch.inference_mode():
            hidden = self.model(**self._inputs(input_ids, attention_mask, token_type_ids))
            return hidden.last_hidden_state.float().cpu().numpy()

    def embed(self, input_ids, attention_mask, token_type_ids, head: PoolingHead) -> np.ndarray:
        """Pooling and Dense on the model's device, accumulated in float32 (the fp16 token
        embeddings are upcast there); only the [batch, dim] result is copied to the host."""
        with self.torch.inference_mode():
            inputs = self._inputs(input_ids, attention_mask, token_type_ids)
            hidden = self.model(**inputs).last_hidden_state.float()
            vectors = self._on_device(head)(hidden, inputs["attention_mask"])
            return vectors.cpu().numpy()

    def _on_device(self, head: PoolingHead) -> PoolingHead:
        """`head` with its Dense weights as float32 tensors on the device (converted once)."""
        if self._head_source is not head:
            torch, device = self.torch, self.device
            self._head = head.to(lambda a: torch.as_tensor(a, dtype=torch.float32, device=device))
            self._head_source = head
        return self._head

    def close(self) -> None:
        self.model = None
