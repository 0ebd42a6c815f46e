"""The baseline a user writes in an afternoon: FastAPI + SentenceTransformer.encode per
request, no cross-request batching. TEI's /embed shape, so the same load generator drives it.

    python -m benchmarks.baselines.naive_server --model PATH --port 8001
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer


class EmbedRequest(BaseModel):
    inputs: str | list[str]


def create_app(model_path: str) -> FastAPI:
    model = SentenceTransformer(model_path, device="cpu")
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/embed")
    def embed(body: EmbedRequest):  # a sync route: FastAPI runs it in its thread pool
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        return model.encode(texts, normalize_embeddings=True).tolist()

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
