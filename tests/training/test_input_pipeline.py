"""The trainer's input pipeline: cached token ids equal the per-batch tokenisation, the
length-bucketed sampler yields every sample once per epoch (seeded) with less padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from tests.training.conftest import PAIRS
from training import input_pipeline as ip

TEXTS = [t for pair in PAIRS for t in pair] + ["word " * 40]  # the last one is truncated


@pytest.fixture(scope="module")
def model(bundled_model):
    student = SentenceTransformer(str(bundled_model), device="cpu")
    student.max_seq_length = 24
    return student


def test_collated_batch_equals_the_models_own_tokenisation(model, tmp_path):
    tokens = ip.cached_token_ids(model, TEXTS, tmp_path)
    targets = np.arange(len(TEXTS) * 3, dtype=np.float32).reshape(len(TEXTS), 3)
    collator = ip.PretokenizedCollator.for_model(model, tokens, targets)
    order = [5, 32, 0, 17, 3]
    batch = collator([{"text": i, "target": i, "length": 0} for i in order])
    expected = model.preprocess([TEXTS[i] for i in order])
    assert torch.equal(batch["sentence_input_ids"], expected["input_ids"])
    assert torch.equal(batch["sentence_attention_mask"], expected["attention_mask"])
    assert torch.equal(batch["sentence_token_type_ids"], expected["token_type_ids"])
    assert torch.equal(batch["label"], torch.from_numpy(targets[order]))
    assert tokens.lengths.max() == 24  # truncated to max_seq_length, as the trainer would


def test_token_ids_are_cached_by_tokenizer_length_and_texts(model, tmp_path, monkeypatch):
    first = ip.cached_token_ids(model, TEXTS, tmp_path)
    files = list(tmp_path.glob("tokens-*.npz"))
    assert len(files) == 1

    def no_tokenising(*_args, **_kwargs):
        raise AssertionError("tokenised again instead of reading the cache")

    monkeypatch.setattr(ip, "tokenize_texts", no_tokenising)
    again = ip.cached_token_ids(model, TEXTS, tmp_path)
    assert np.array_equal(again.ids, first.ids) and np.array_equal(again.offsets, first.offsets)
    key = ip.token_cache_key(model.tokenizer, 24, TEXTS)
    assert key != ip.token_cache_key(model.tokenizer, 128, TEXTS)
    assert key != ip.token_cache_key(model.tokenizer, 24, TEXTS[:-1])


def test_bucketed_batches_cover_every_sample_once_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1003)
    batches = ip.bucketed_batches(lengths, batch_size=16, chunk_batches=8, seed=3)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(1003))
    assert sum(len(b) < 16 for b in batches) == 1
    assert batches == ip.bucketed_batches(lengths, 16, 8, seed=3)  # seeded
    assert batches != ip.bucketed_batches(lengths, 16, 8, seed=4)

    def padded_tokens(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    shuffled = ip.bucketed_batches(lengths, 16, chunk_batches=0, seed=3)
    assert sorted(i for b in shuffled for i in b) == list(range(1003))
    assert padded_tokens(batches) < 0.7 * padded_tokens(shuffled)
    dropped = ip.bucketed_batches(lengths, 16, 8, seed=3, drop_last=True)
    assert all(len(b) == 16 for b in dropped) and len(dropped) == 1003 // 16


def test_sampler_reshuffles_per_epoch_and_replays_an_epoch(model, tmp_path):
    from datasets import Dataset

    lengths = np.arange(40) % 7 + 1
    dataset = Dataset.from_dict({"text": list(range(40)), "target": [0] * 40, "length": lengths})
    sampler = ip.BucketSamplerFactory(seed=1, chunk_batches=2)(dataset, 4, False)
    assert len(sampler) == 10
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    assert sorted(i for b in epoch1 for i in b) == list(range(40))
    sampler.set_epoch(0)
    assert list(sampler) == epoch0


def test_text_path_is_kept_behind_no_pretokenize(model, tmp_path):
    english = [e for e, _ in PAIRS]
    samples = [(de, e) for e, de in PAIRS] + [(e, e) for e in english]
    vectors = np.eye(len(english), 4, dtype=np.float32)
    dataset, collator = ip.build_inputs(model, samples, english, vectors, tmp_path, False)
    assert collator is None and dataset.column_names == ["sentence", "label"]
    dataset, collator = ip.build_inputs(model, samples, english, vectors, tmp_path, True)
    assert dataset.column_names == ["text", "target", "length"]
    row = dataset[0]
    assert collator.tokens.lengths[row["text"]] == row["length"]
    batch = collator([dataset[0]])
    assert torch.equal(batch["label"][0], torch.from_numpy(vectors[0]))  # de -> its English
    assert torch.equal(batch["sentence_input_ids"], model.preprocess([PAIRS[0][1]])["input_ids"])


def test_worker_processes_give_the_same_batches(model, tmp_path):
    """What CUDA runs use by default (2 workers): the same batches as in-process loading."""
    from torch.utils.data import DataLoader

    english = [e for e, _ in PAIRS]
    samples = [(de, e) for e, de in PAIRS] + [(e, e) for e in english]
    vectors = np.random.default_rng(0).standard_normal((len(english), 4)).astype(np.float32)
    dataset, collator = ip.build_inputs(model, samples, english, vectors, tmp_path, True)

    def batches(workers: int) -> list[dict]:
        sampler = ip.BucketSamplerFactory(seed=5, chunk_batches=2)(dataset, 8, False)
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collator, num_workers=workers
        )
        return list(loader)

    in_process, workers = batches(0), batches(2)
    assert len(in_process) == len(workers) == 4
    for a, b in zip(in_process, workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_encoding_from_cached_ids_equals_model_encode(model, tmp_path):
    """The projection fit's path: vectors from the cached ids (no tokenizer, length-sorted
    batches) equal `encode` on the texts, for texts of different lengths (one truncated),
    for the whole model and for the modules up to pooling."""
    from training.student import pooled_model

    tokens = ip.cached_token_ids(model, TEXTS, tmp_path)
    assert len(set(tokens.lengths.tolist())) > 5  # several lengths in one batch
    for encoder in (model, pooled_model(model)):
        expected = encoder.encode(TEXTS, batch_size=4)
        got = ip.encode_token_ids(encoder, tokens, batch_size=4)
        assert got.shape == expected.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert ip.distinct_texts(["b", "a", "b", "c"]) == ["b", "a", "c"]


def test_token_ids_take_rows_in_order():
    tokens = ip.TokenizedTexts(
        np.array([1, 2, 3, 4, 5, 6], dtype=np.int32), np.array([0, 2, 3, 6], dtype=np.int64)
    )
    taken = tokens.take([2, 0])
    assert len(taken) == 2 and taken[0].tolist() == [4, 5, 6] and taken[1].tolist() == [1, 2]
    assert taken.lengths.tolist() == [3, 2] and len(tokens.take([])) == 0


def test_accelerates_ddp_wrapper_reaches_the_bucketed_sampler():
    """Under DDP accelerate wraps the batch sampler (`BatchSamplerShard`) and its
    `DataLoaderShard.set_epoch` reaches only `batch_sampler.batch_sampler.sampler`: the
    epoch must still change the batch order, or every epoch repeats the first one's."""
    from accelerate.data_loader import BatchSamplerShard, DataLoaderShard
    from datasets import Dataset

    dataset = Dataset.from_dict(
        {"text": list(range(40)), "target": [0] * 40, "length": np.arange(40) % 7 + 1}
    )
    sampler = ip.BucketSamplerFactory(seed=1, chunk_batches=2)(dataset, 4, False)
    loader = DataLoaderShard(
        dataset, batch_sampler=BatchSamplerShard(sampler, num_processes=2, process_index=0)
    )
    first = list(loader.batch_sampler)
    loader.set_epoch(1)
    assert sampler.epoch == 1 and list(loader.batch_sampler) != first
    loader.set_epoch(0)
    assert list(loader.batch_sampler) == first
