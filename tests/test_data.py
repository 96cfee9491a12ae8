"""Corpus preparation, the memory-mapped dataset and the batch loader: exact numbers, not smoke.

A tiny vocabulary makes every count predictable: one known word is one token, an unknown word
is one [UNK], so a line of k words is k + 2 tokens.
"""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

import numpy as np
import pytest

from conftest import minilm_dir
from distilbert_jax.cli import main
from distilbert_jax.data import prepare
from distilbert_jax.data.dataset import TokenDataset
from distilbert_jax.data.loader import BatchLoader
from distilbert_jax.data.prepare import prepare_corpus
from distilbert_jax.errors import UserError
from distilbert_jax.tokenizer import Tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP = 0, 1, 2, 3
WORDS = ["a", "b", "c", "d"] + [f"w{i}" for i in range(2000)]
ID = {w: i + len(SPECIALS) for i, w in enumerate(WORDS)}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_vocab(SPECIALS + WORDS)


def write(path, content) -> str:
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(data)
    return str(path)


def words(k: int, word: str = "a") -> str:
    return " ".join([word] * k)


def run(tok, tmp_path, lines_or_paths, name="out", **kw) -> tuple[dict, str]:
    if isinstance(lines_or_paths, str):
        lines_or_paths = [write(tmp_path / f"{name}.txt", lines_or_paths)]
    kw.setdefault("heldout_fraction", 0.0)
    kw.setdefault("progress", False)
    out = str(tmp_path / name)
    return prepare_corpus(tok, lines_or_paths, out, **kw), out


def all_rows(ds) -> list[list[int]]:
    return [ds[i].tolist() for i in range(len(ds))]


# ------------------------------------------------------------------------------ preparation
def test_long_lines_become_510_token_chunks_each_wrapped(tok, tmp_path):
    manifest, out = run(tok, tmp_path, words(1100) + "\n" + words(600, "b") + "\n")
    ds = TokenDataset.open(out)
    # 1100 inner tokens -> 510 + 510 + 80; 600 -> 510 + 90; every chunk re-wrapped in [CLS] ... [SEP]
    assert ds.lengths.tolist() == [512, 512, 82, 512, 92]
    for row in all_rows(ds):
        assert row[0] == CLS and row[-1] == SEP and CLS not in row[1:-1] and SEP not in row[1:-1]
    inner = [row[1:-1] for row in all_rows(ds)]
    assert sum(inner[:3], []) == [ID["a"]] * 1100 and sum(inner[3:], []) == [ID["b"]] * 600
    assert manifest["chunked_lines"] == 2 and manifest["chunks"] == 5
    assert manifest["splits"]["train"]["max_length"] == 512 and manifest["splits"]["train"]["min_length"] == 82


def test_short_chunk_of_a_long_line_is_dropped_and_counted(tok, tmp_path):
    manifest, out = run(tok, tmp_path, words(40) + "\n", max_length=20)
    assert TokenDataset.open(out).lengths.tolist() == [20, 20]  # 18 + 18 + 4: the 6-token tail is too short
    assert manifest["chunks"] == 3 and manifest["dropped"]["too_short"] == 1


def test_drops_and_oddities_are_counted_never_fatal(tok, tmp_path):
    body = "\n".join([
        words(9),                                   # 11 tokens: dropped, too short
        words(10),                                  # 12 tokens: kept
        "",                                         # empty
        "   \t ",                                   # whitespace only: empty
        words(6, "zzz") + " " + words(4),           # 6 [UNK] of 12: dropped
        words(5, "zzz") + " " + words(5, "b"),      # 5 [UNK] of 12: kept
    ]).encode() + b"\n" + b"c c c \xff\xfe c c c c c c c\r\n" + words(11, "d").encode()  # bad bytes; no final \n
    first = write(tmp_path / "one.txt", body)
    empty = write(tmp_path / "empty.txt", b"")
    manifest, out = run(tok, tmp_path, [first, empty])
    assert manifest["lines_read"] == 8 and manifest["empty_files"] == 1 and manifest["undecodable_lines"] == 1
    assert manifest["dropped"] == {"empty_line": 2, "too_short": 1, "too_many_unk": 1}
    assert all_rows(TokenDataset.open(out)) == [
        [CLS] + [ID["a"]] * 10 + [SEP],
        [CLS] + [UNK] * 5 + [ID["b"]] * 5 + [SEP],
        [CLS] + [ID["c"]] * 10 + [SEP],  # U+FFFD is removed by the BERT normalizer, \r is whitespace
        [CLS] + [ID["d"]] * 11 + [SEP],
    ]
    assert manifest["splits"]["train"] == {"sequences": 4, "tokens": 12 + 12 + 12 + 13, "min_length": 12,
                                           "max_length": 13, "mean_length": 12.25}


def test_counts_are_a_recount_of_the_train_split(tok, tmp_path):
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS[:50], rng.integers(10, 40))) for _ in range(400)]
    manifest, out = run(tok, tmp_path, "\n".join(lines), heldout_fraction=0.2)
    train, held = TokenDataset.open(out), TokenDataset.open(out, "heldout")
    recount = np.bincount(np.concatenate(all_rows(train)), minlength=train.vocab_size)
    assert train.counts.dtype == np.int64 and np.array_equal(train.counts, recount)
    assert train.counts[CLS] == train.counts[SEP] == len(train) and train.counts.sum() == manifest["splits"]["train"][
        "tokens"]
    assert len(held) > 0 and train.counts.sum() + held.lengths.sum() == sum(len(line.split()) + 2 for line in lines)


def test_fingerprint_is_stable_and_follows_content(tok, tmp_path):
    text = "\n".join(words(10 + i % 7, "abcd"[i % 4]) for i in range(300))
    (m1, o1), (m2, o2) = run(tok, tmp_path, text, name="one"), run(tok, tmp_path, text, name="two")
    assert m1["fingerprint"] == m2["fingerprint"] and len(m1["fingerprint"]) == 64
    for name in ("train.tokens", "train.offsets.npy", "counts.npy"):
        assert open(os.path.join(o1, name), "rb").read() == open(os.path.join(o2, name), "rb").read()
    m3, _ = run(tok, tmp_path, text.replace("a", "b", 1), name="three")
    m4, _ = run(tok, tmp_path, text, name="four", heldout_fraction=0.3)  # same tokens, other split
    assert len({m1["fingerprint"], m3["fingerprint"], m4["fingerprint"]}) == 3
    assert m1["tokenizer_sha256"] == m3["tokenizer_sha256"]
    ds = TokenDataset.open(o1)
    assert ds.manifest == json.load(open(os.path.join(o1, "manifest.json"))) and ds.fingerprint == m1["fingerprint"]
    assert ds.tokens.dtype == np.uint16 and ds.special_ids == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}


def test_heldout_split_is_deterministic_and_near_the_fraction(tok, tmp_path):
    n = 4000
    text = "\n".join(f"w{i % 2000} w{i // 2000} " + words(10) for i in range(n))
    (m1, o1), (m2, o2) = (run(tok, tmp_path, text, name=f"s{k}", heldout_fraction=0.1, seed=7) for k in (1, 2))
    m3, o3 = run(tok, tmp_path, text, name="s3", heldout_fraction=0.1, seed=8)
    held = [m["splits"]["heldout"]["sequences"] for m in (m1, m3)]
    assert all(abs(h - 400) < 4 * np.sqrt(n * 0.1 * 0.9) for h in held)  # 4 sigma of a binomial
    assert m1["splits"]["train"]["sequences"] + held[0] == n
    rows = [sorted(map(tuple, all_rows(TokenDataset.open(o, "heldout")))) for o in (o1, o2, o3)]
    assert rows[0] == rows[1] and rows[0] != rows[2]
    train = set(map(tuple, all_rows(TokenDataset.open(o1))))
    assert not train & set(rows[0]) and len(train) + len(rows[0]) == n  # disjoint, together everything
    expected = prepare.heldout_mask(7, np.arange(n), 0.1)  # the split is exactly the published hash
    assert int(expected.sum()) == held[0]


def test_memory_stays_bounded_whatever_the_corpus_size(tok, tmp_path, monkeypatch):
    """Python's traced peak while preparing 2.4 MB is the same as for 0.26 MB, and a fraction of it."""
    monkeypatch.setattr(prepare, "_BATCH_LINES", 100)
    rng = np.random.default_rng(1)
    vocab = np.array(WORDS[:60])
    lines = [" ".join(rng.choice(vocab, rng.integers(12, 60))) for _ in range(2000)]
    small = write(tmp_path / "small.txt", "\n".join(lines) + "\n")
    big = write(tmp_path / "big.txt", "\n".join(lines * 9) + "\n")
    run(tok, tmp_path, lines[0], name="warm-up")  # imports and first-call caches are not the corpus
    peaks = []
    for path in (small, big):
        tracemalloc.start()
        try:
            manifest, _ = run(tok, tmp_path, [path], name=os.path.basename(path)[:-4], overwrite=True)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    size = os.path.getsize(big)
    assert manifest["splits"]["train"]["sequences"] == 18000 and size > 2_000_000
    assert peaks[1] < 1.25 * peaks[0] + 65536, f"peak grew from {peaks[0]:,} to {peaks[1]:,} bytes"
    assert peaks[1] < size / 6, f"peak {peaks[1]:,} bytes while preparing {size:,} bytes"


def test_interrupted_run_leaves_nothing_and_keeps_the_old_dataset(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_BATCH_LINES", 10)
    text = "\n".join(words(12, "abcd"[i % 4]) for i in range(50))
    _, out = run(tok, tmp_path, text)
    before = {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)}
    calls = []

    def failing(texts, *args):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressing Ctrl-C mid-way
        return Tokenizer._encode_batch(tok, texts, *args)

    monkeypatch.setattr(tok, "_encode_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        run(tok, tmp_path, text, name="fresh")
    with pytest.raises(KeyboardInterrupt):
        calls.clear()
        run(tok, tmp_path, text.replace("a", "b"), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["fresh.txt", "out", "out.txt"]  # no partial folder left anywhere
    assert {n: open(os.path.join(out, n), "rb").read() for n in os.listdir(out)} == before
    monkeypatch.undo()
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        run(tok, tmp_path, text)
    (tmp_path / "precious").mkdir()
    write(tmp_path / "precious" / "notes.txt", "keep me")
    with pytest.raises(UserError, match="not a prepared dataset"):
        run(tok, tmp_path, text, name="precious", overwrite=True)
    manifest, _ = run(tok, tmp_path, text.replace("a", "b"), overwrite=True)
    assert manifest["fingerprint"] != json.loads(before["manifest.json"])["fingerprint"]


@pytest.mark.parametrize("case", ["no-inputs", "missing", "folder", "all-dropped", "empty-file"])
def test_bad_corpus_is_a_user_error_and_writes_nothing(tok, tmp_path, case):
    inputs = {"no-inputs": [], "missing": [str(tmp_path / "nowhere.txt")], "folder": [str(tmp_path)],
              "all-dropped": [write(tmp_path / "c.txt", "\n\nshort line\n" + words(8) + "\n\xff\n")],
              "empty-file": [write(tmp_path / "c.txt", b"")]}[case]
    with pytest.raises(UserError) as err:
        run(tok, tmp_path, inputs, name="data")
    assert "\n" not in str(err.value) and not os.path.exists(tmp_path / "data")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_dataset_open_rejects_what_is_not_a_prepared_dataset(tok, tmp_path):
    _, out = run(tok, tmp_path, "\n".join(words(15) for _ in range(20)))
    with pytest.raises(UserError, match="no manifest.json"):
        TokenDataset.open(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        TokenDataset.open(tmp_path / "nowhere")
    with pytest.raises(UserError, match="split must be"):
        TokenDataset.open(out, "test")
    assert len(TokenDataset.open(out, "heldout")) == 0  # an empty split opens fine
    manifest_path = os.path.join(out, "manifest.json")
    good = open(manifest_path).read()
    open(manifest_path, "w").write(good.replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(UserError, match="format version 99"):
        TokenDataset.open(out)
    open(manifest_path, "w").write(good)
    with open(os.path.join(out, "train.tokens"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(UserError, match="truncated"):
        TokenDataset.open(out)


def test_real_bert_vocab(tmp_path):
    bert = Tokenizer.from_pretrained(minilm_dir())
    text = "Paris is the capital and most populous city of France.\nshort one\n" + "ñandú " * 3 + "\n"
    manifest, out = run(bert, tmp_path, text)
    ds = TokenDataset.open(out)
    assert manifest["vocab_size"] == 30522 and manifest["dtype"] == "uint16" and ds.special_ids["cls"] == 101
    assert ds[0].tolist() == bert.encode("Paris is the capital and most populous city of France.")
    assert len(ds) == 1 and manifest["dropped"]["too_short"] == 2 and ds[0].dtype == np.int32
    assert Tokenizer.from_pretrained(out).get_vocab() == bert.get_vocab()  # the tokenizer travels with the data


# ------------------------------------------------------------------------------ loader
N_SEQ = 1003  # not a multiple of the batch size: the last batch has padding rows


@pytest.fixture(scope="module")
def corpus(tok, tmp_path_factory):
    """Line i is `w{i} a a ...` of 12..300 tokens, so a row's second token names its sequence."""
    tmp = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(3)
    lengths = rng.integers(10, 299, N_SEQ)
    lengths[:3] = [10, 298, 120]
    path = write(tmp / "c.txt", "\n".join(f"w{i} " + words(k - 1) for i, k in enumerate(lengths)))
    prepare_corpus(tok, [path], str(tmp / "d"), heldout_fraction=0.0, progress=False)
    return TokenDataset.open(tmp / "d")


def seq_ids(batch) -> list[int]:
    """Sequence index of each real row (-1 for a padding row)."""
    return [int(row[1]) - ID["w0"] if mask[0] else -1 for row, mask in zip(batch.input_ids, batch.attention_mask)]


def test_batches_use_bucket_shapes_and_cover_each_sequence_once(corpus):
    loader = BatchLoader(corpus, batch_size=16, seed=0)
    assert loader.buckets == (16, 32, 64, 128, 256, 512) and loader.batches_per_epoch == 63  # 300 -> 512 kept
    assert BatchLoader(corpus, batch_size=16, seed=0, buckets=(16, 128, 300, 1024, 2048)).buckets == (16, 128, 300)
    seen, spreads = [], []
    for k, batch in enumerate(loader.epoch_batches(0)):
        assert batch.index == k and batch.epoch == 0 and batch.input_ids.dtype == batch.attention_mask.dtype == np.int32
        lengths = batch.attention_mask.sum(1)
        width = batch.input_ids.shape[1]
        assert batch.input_ids.shape == (16, width) and width == min(b for b in loader.buckets if b >= lengths.max())
        for i, row, n in zip(seq_ids(batch), batch.input_ids, lengths):
            if i >= 0:
                assert np.array_equal(row[:n], corpus[i]) and not row[n:].any() and n == corpus.lengths[i]
        real = lengths[lengths > 0]
        spreads.append(real.max() - real.min())
        seen += [i for i in seq_ids(batch) if i >= 0]
        if seq_ids(batch).count(-1):
            assert seq_ids(batch).count(-1) == 63 * 16 - N_SEQ  # the one partial batch is padded, not dropped
    assert sorted(seen) == list(range(N_SEQ))
    assert np.mean(spreads) < 25  # length-grouped: random batches of 12..300 would spread ~250


def test_order_is_a_function_of_seed_and_epoch(corpus):
    def order(seed, epoch):
        return [seq_ids(b) for b in BatchLoader(corpus, batch_size=16, seed=seed).epoch_batches(epoch)]

    assert order(5, 0) == order(5, 0) and order(5, 1) == order(5, 1)
    assert order(5, 0) != order(5, 1) and order(5, 0) != order(6, 0)
    loader = BatchLoader(corpus, batch_size=16, seed=5, prefetch=0)
    it = iter(loader)
    forever = [seq_ids(next(it)) for _ in range(2 * 63 + 1)]  # iteration runs on into epoch 1 and 2
    assert forever[:63] == order(5, 0) and forever[63:126] == order(5, 1) and loader.state() == {
        "epoch": 2, "batch": 1, "seed": 5}


def test_processes_read_disjoint_parts_of_the_same_global_batches(corpus):
    whole = list(BatchLoader(corpus, batch_size=16, seed=2).epoch_batches(0))
    halves = [list(BatchLoader(corpus, batch_size=16, seed=2, process_index=p, process_count=2).epoch_batches(0))
              for p in range(2)]
    for full, a, b in zip(whole, *halves):
        assert a.input_ids.shape == b.input_ids.shape == (8, full.input_ids.shape[1])  # same bucket everywhere
        assert np.array_equal(np.concatenate([a.input_ids, b.input_ids]), full.input_ids)
        assert np.array_equal(np.concatenate([a.attention_mask, b.attention_mask]), full.attention_mask)
    ids = [set(i for b in h for i in seq_ids(b) if i >= 0) for h in halves]
    assert not ids[0] & ids[1] and len(ids[0] | ids[1]) == N_SEQ
    with pytest.raises(UserError, match="not divisible"):
        BatchLoader(corpus, batch_size=15, seed=0, process_count=2)
    with pytest.raises(UserError, match="largest bucket is 128"):
        BatchLoader(corpus, batch_size=16, seed=0, buckets=(64, 128))


@pytest.mark.parametrize("prefetch", [0, 3])
def test_restore_continues_exactly_where_the_state_was_taken(corpus, prefetch):
    reference = BatchLoader(corpus, batch_size=32, seed=9, prefetch=prefetch)
    batches_per_epoch = reference.batches_per_epoch  # 32
    it = iter(reference)
    states, batches = [], []
    for _ in range(2 * batches_per_epoch + 5):
        states.append(reference.state())
        batches.append(next(it))
    it.close()
    for k in (0, 7, batches_per_epoch - 1, batches_per_epoch, batches_per_epoch + 20):
        resumed = BatchLoader(corpus, batch_size=32, seed=9, prefetch=prefetch)
        resumed.restore(json.loads(json.dumps(states[k])))  # as it comes back from a checkpoint
        again = iter(resumed)
        for want in batches[k:k + 6]:
            got = next(again)
            assert (got.epoch, got.index) == (want.epoch, want.index)
            assert np.array_equal(got.input_ids, want.input_ids) and np.array_equal(got.attention_mask,
                                                                                    want.attention_mask)
        assert resumed.state() == states[k + 6]  # counts what was handed out, not what was prefetched
        again.close()
    assert states[batches_per_epoch + 2] == {"epoch": 1, "batch": 2, "seed": 9}
    with pytest.raises(UserError, match="same data seed"):
        BatchLoader(corpus, batch_size=32, seed=1).restore(states[3])


def test_iterators_stop_cleanly_and_report_producer_errors(corpus):
    loader = BatchLoader(corpus, batch_size=16, seed=0, prefetch=2)
    it = iter(loader)
    first = next(it)
    loader.restore({"epoch": 0, "batch": 0, "seed": 0})  # a stale iterator must not go on from elsewhere
    with pytest.raises(StopIteration):
        next(it)
    again = next(iter(loader))
    assert np.array_equal(again.input_ids, first.input_ids) and loader.state()["batch"] == 1

    class Broken:
        lengths = corpus.lengths

        def __getitem__(self, i):
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        next(iter(BatchLoader(Broken(), batch_size=16, seed=0)))
    threading.Event().wait(0.3)
    assert not [t for t in threading.enumerate() if t.name == "BatchLoader-prefetch"]


# ------------------------------------------------------------------------------ command line
def test_cli_prepares_and_summarises(tok, tmp_path, capsys):
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    corpus = write(tmp_path / "c.txt", "\n".join([words(20), words(3), "", words(15, "b")]) + "\n")
    assert main(["prepare-data", "--tokenizer", str(tok_dir), "--input", corpus, "--output", str(tmp_path / "d"),
                 "--heldout-fraction", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    manifest = json.load(open(tmp_path / "d" / "manifest.json"))
    assert "train 2 sequences / 39 tokens" in out and "too_short 1" in out and "empty_line 1" in out
    assert manifest["fingerprint"] in out


@pytest.mark.parametrize("case", ["missing-input", "empty-corpus", "bad-tokenizer", "output-not-empty"])
def test_cli_bad_input_is_one_error_line_with_exit_2(tok, tmp_path, capsys, case):
    tok_dir = tmp_path / "tok"
    tok.save_pretrained(tok_dir)
    good = write(tmp_path / "c.txt", words(20) + "\n")
    (tmp_path / "full").mkdir()
    write(tmp_path / "full" / "x", "x")
    tokenizer, inputs, output = {
        "missing-input": (tok_dir, [str(tmp_path / "nowhere.txt")], tmp_path / "d"),
        "empty-corpus": (tok_dir, [write(tmp_path / "e.txt", "\n\n")], tmp_path / "d"),
        "bad-tokenizer": (tmp_path / "no-tokenizer", [good], tmp_path / "d"),
        "output-not-empty": (tok_dir, [good], tmp_path / "full"),
    }[case]
    code = main(["prepare-data", "--tokenizer", str(tokenizer), "--input", *inputs, "--output", str(output),
                 "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
