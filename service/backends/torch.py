"""PyTorch backend: the sentence-transformers Transformer module on CPU or CUDA
(fp16 on CUDA)."""

from __future__ import annotations

import logging

import numpy as np

from service.backends.base import Backend, BackendInfo

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
        log.info("torch backend on %s (%s)", self.device, self.info.dtype)

    def forward(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            kwargs = {
                "input_ids": torch.from_numpy(input_ids).to(self.device),
                "attention_mask": torch.from_numpy(attention_mask).to(self.device),
            }
            if self.takes_token_types:
                kwargs["token_type_ids"] = torch.from_numpy(token_type_ids).to(self.device)
            hidden = self.model(**kwargs).last_hidden_state
            return hidden.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
