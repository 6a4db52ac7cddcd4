"""Tests for interp.data: text sources, splits, packing into token windows."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from interp.data import (
    TextSource,
    count_stdlib_bytes,
    in_validation,
    iter_documents,
    stdlib_info,
    token_batches,
    token_windows,
)


def byte_tokenizer(bos: bool = True, eos: bool = True):
    """An offline HF tokenizer: byte-level BPE, no merges (a token per UTF-8 byte), + specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = {}
    if bos:
        specials["bos_token"] = "<bos>"
    if eos:
        specials["eos_token"] = "<eos>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, **specials)


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def _bodies_text(tok, windows, has_bos: bool = True) -> str:
    ids = [t for w in windows for t in (w[1:] if has_bos else w).tolist()]
    return tok.decode(ids, skip_special_tokens=False)


@pytest.fixture()
def text_dir(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_text("The second document, plain ASCII text.\n" * 3)
    (d / "a.md").write_text("# First\nSome markdown prose here.\n" * 2)
    (d / "sub" / "c.py").write_text("def f(x):\n    return x + 1\n")
    (d / "ignored.csv").write_text("x,y\n")
    (d / ".hidden.txt").write_text("never read")
    return d


# ----------------------------------------------------------------------------- stdlib


def test_stdlib_split_by_file_disjoint_and_nonempty():
    src = TextSource("stdlib")
    train, val = src.keys("train"), src.keys("validation")
    assert train and val
    assert not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)
    assert all(in_validation(k, 5) for k in val) and not any(in_validation(k, 5) for k in train)
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.10
    keys = train + val
    assert not any(k.startswith("site-packages/") for k in keys)
    assert "pydoc_data/topics.py" not in keys  # its strings come as prose documents instead
    assert any(k.startswith("pydoc_data/topics.py::") for k in keys)
    # the rule only depends on the key: a larger val_percent moves files train -> validation only
    assert set(val) <= set(TextSource("stdlib", val_percent=10).keys("validation"))


def test_stdlib_documents_and_sizes():
    first = next(iter_documents("stdlib", "validation"))
    assert isinstance(first, str) and first
    info = stdlib_info()
    assert info["splits"]["train"]["files"] > 1000 and info["splits"]["validation"]["files"] > 10
    assert info["splits"]["train"]["prose_docs"] > 0
    total = count_stdlib_bytes()
    assert 5e6 < total < 2e8
    assert count_stdlib_bytes("train") + count_stdlib_bytes("validation") == total
    json.dumps(TextSource().describe())


def test_stdlib_windows_deterministic_and_seeded(tok):
    a = list(token_windows(tok, context_size=64, seed=0, max_windows=6))
    b = list(token_windows(tok, context_size=64, seed=0, max_windows=6))
    c = list(token_windows(tok, context_size=64, seed=1, max_windows=6))
    assert len(a) == 6 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    for w in a:
        assert w.shape == (64,) and w.dtype == torch.long
        assert w[0].item() == tok.bos_token_id and (w[1:] != tok.bos_token_id).all()
    # seed=None: sorted order, so the first window starts the first sorted document
    first_key = TextSource().keys("train")[0]
    first_doc = next(iter_documents("stdlib", "train"))
    assert first_key.endswith(".py")
    w0 = next(token_windows(tok, context_size=64, seed=None))
    assert tok.decode(w0[1:].tolist()) == first_doc[: len(tok.decode(w0[1:].tolist()))]


# ----------------------------------------------------------------------------- packing


def test_no_tokens_lost_local_files(tok, text_dir):
    docs = list(iter_documents(str(text_dir), val_percent=0))
    # sorted by relative path: a.md, b.txt, sub/c.py; .csv and hidden files skipped
    assert docs[0].startswith("# First") and docs[2].startswith("def f") and len(docs) == 3
    expected = "".join(d + "<eos>" for d in docs)
    ws = list(token_windows(tok, str(text_dir), context_size=9, seed=None, val_percent=0))
    assert all(w.shape == (9,) and w[0] == tok.bos_token_id for w in ws)
    got = _bodies_text(tok, ws)
    assert got == expected[: len(got)]
    n_tokens = len(tok(expected, add_special_tokens=False)["input_ids"])
    assert n_tokens - 8 < 8 * len(ws) <= n_tokens  # only the trailing partial window is dropped


def test_without_bos(text_dir):
    no_bos = byte_tokenizer(bos=False)
    ws = list(token_windows(no_bos, str(text_dir), context_size=8, seed=None, val_percent=0))
    assert all(w.shape == (8,) for w in ws)
    tok = byte_tokenizer()
    kw = dict(context_size=8, seed=None, val_percent=0)
    ws2 = list(token_windows(tok, str(text_dir), prepend_bos=False, **kw))
    assert len(ws2) == len(ws) and all(w.shape == (8,) for w in ws2)
    assert _bodies_text(no_bos, ws, has_bos=False) == _bodies_text(tok, ws2, has_bos=False)
    assert _bodies_text(tok, ws2, has_bos=False).startswith("# First")


def test_special_token_text_is_plain_text(tmp_path, tok):
    (tmp_path / "x.txt").write_text("a <eos> b <bos> c " * 4)
    src = str(tmp_path / "x.txt")
    ws = list(token_windows(tok, src, context_size=16, seed=None, val_percent=0))
    ids = torch.cat([w[1:] for w in ws])
    assert (ids != tok.eos_token_id).all() and (ids != tok.bos_token_id).all()


def test_window_pool_and_model_tokenizer(tok, text_dir):
    model = types.SimpleNamespace(tokenizer=tok)  # e.g. a TransformerLens model
    kw = dict(context_size=6, seed=3, val_percent=0)
    plain = list(token_windows(model, str(text_dir), **kw))
    pooled = list(token_windows(tok, str(text_dir), window_pool=8, **kw))
    again = list(token_windows(tok, str(text_dir), window_pool=8, **kw))
    key = lambda ws: sorted(tuple(w.tolist()) for w in ws)  # noqa: E731
    assert key(plain) == key(pooled)
    assert [w.tolist() for w in pooled] != [w.tolist() for w in plain]
    assert all(torch.equal(x, y) for x, y in zip(pooled, again))


def test_token_batches(tok, text_dir):
    n = len(list(token_windows(tok, str(text_dir), context_size=8, val_percent=0)))
    batches = list(token_batches(tok, str(text_dir), context_size=8, batch_size=4, val_percent=0))
    assert len(batches) == n // 4  # last partial batch dropped
    assert all(b.shape == (4, 8) and b.dtype == torch.long for b in batches)
    kw = dict(context_size=8, val_percent=0)
    assert len(list(token_batches(tok, str(text_dir), batch_size=2, max_batches=3, **kw))) == 3
    assert len(list(token_windows(tok, str(text_dir), max_windows=2, **kw))) == 2


# ----------------------------------------------------------------------------- local formats


def test_jsonl_single_file_split_by_document(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"body": f"document number {i}", "id": i} for i in range(40)]
    lines = [json.dumps(r) for r in rows]
    path.write_text("\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:]))  # a blank line
    train = list(iter_documents(str(path), "train", text_field="body", val_percent=30))
    val = list(iter_documents(str(path), "val", text_field="body", val_percent=30))
    assert train and val and not set(train) & set(val)
    assert sorted(train + val) == sorted(r["body"] for r in rows)
    assert val == [r["body"] for i, r in enumerate(rows) if in_validation(str(i), 30)]
    assert TextSource(str(path)).split_by == "document"
    shuffled = list(iter_documents(str(path), "train", text_field="body", val_percent=30, seed=1))
    assert sorted(shuffled) == sorted(train) and shuffled != train
    with pytest.raises(ValueError, match=r"docs\.jsonl:1.*'text'.*\['body', 'id'\]"):
        list(iter_documents(str(path)))


def test_parquet_and_glob(tmp_path, text_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"text": ["alpha", None, "beta", "", "gamma"], "n": [1, 2, 3, 4, 5]})
    pq.write_table(table, tmp_path / "p.parquet")
    docs = list(iter_documents(str(tmp_path / "p.parquet"), val_percent=0))
    assert docs == ["alpha", "beta", "gamma"]  # null and empty texts skipped
    with pytest.raises(ValueError, match=r"p\.parquet.*'content'.*\['text', 'n'\]"):
        list(iter_documents(str(tmp_path / "p.parquet"), text_field="content"))
    md = list(iter_documents(str(text_dir / "*.md"), val_percent=0))
    assert len(md) == 1 and md[0].startswith("# First")
    rec = TextSource(str(text_dir / "**" / "*.py"))
    assert rec.describe()["n_files"] == 1
    several = TextSource(str(text_dir), val_percent=50)
    assert several.split_by == "file"
    keys = several.keys("train") + several.keys("validation")
    assert sorted(keys) == ["a.md", "b.txt", "sub/c.py"]
    json.dumps(several.describe())


def test_clear_errors(tmp_path, tok, text_dir):
    with pytest.raises(FileNotFoundError, match="no such file"):
        TextSource(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        iter_documents(str(tmp_path / "*.jsonl"))
    with pytest.raises(FileNotFoundError, match="contains no"):
        (tmp_path / "empty").mkdir()
        iter_documents(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="unsupported file type"):
        iter_documents(str(text_dir / "ignored.csv"))
    with pytest.raises(ValueError, match=r"unknown split 'dev'.*'train'.*'validation'"):
        iter_documents("stdlib", "dev")
    with pytest.raises(ValueError, match="val_percent"):
        iter_documents("stdlib", val_percent=101)
    # checked eagerly, before any iteration
    with pytest.raises(ValueError, match="context_size"):
        token_windows(tok, context_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        token_batches(tok, batch_size=0)
    with pytest.raises(ValueError, match="unknown split"):
        token_windows(tok, split="test")
    with pytest.raises(ValueError, match="no documents"):
        list(iter_documents(str(text_dir), "validation", val_percent=0))
    with pytest.raises(ValueError, match="too small"):
        list(token_windows(tok, str(text_dir / "sub" / "c.py"), context_size=4096, val_percent=0))


# ----------------------------------------------------------------------------- Hugging Face


def test_hf_local_folders(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    folder = tmp_path / "hfdata"
    folder.mkdir()
    for split, n in (("train", 12), ("validation", 3)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"{split} example {i}", "label": i}) + "\n")
    spec = f"hf:{folder}"
    assert list(iter_documents(spec, "validation")) == [f"validation example {i}" for i in range(3)]
    train = list(iter_documents(spec, "train"))
    assert train == [f"train example {i}" for i in range(12)]
    assert sorted(iter_documents(spec, "train", seed=0)) == sorted(train)
    with pytest.raises(ValueError, match=r"unknown split 'test'.*'train', 'validation'"):
        iter_documents(spec, "test")
    with pytest.raises(ValueError, match=r"no field 'body'.*label"):
        list(iter_documents(spec, text_field="body"))
    ws = list(token_windows(tok, spec, context_size=8, split="validation", seed=None))
    got = _bodies_text(tok, ws)
    assert got and got == "".join(f"validation example {i}<eos>" for i in range(3))[: len(got)]
    assert TextSource(spec).describe()["loader"] == "load_dataset(streaming=True)"

    # a save_to_disk folder with one Dataset: its rows are split by index hash
    saved = tmp_path / "saved"
    texts = [f"row {i}" for i in range(30)]
    datasets.Dataset.from_dict({"text": texts}).save_to_disk(str(saved))
    tr = list(iter_documents(f"hf:{saved}", "train", val_percent=20))
    va = list(iter_documents(f"hf:{saved}", "validation", val_percent=20))
    assert tr and va and sorted(tr + va) == sorted(texts) and not set(tr) & set(va)
    assert TextSource(f"hf:{saved}").describe()["loader"] == "load_from_disk"
    d = TextSource("hf:some-org/some-name:some-config").describe()  # opens nothing
    assert (d["name"], d["config"]) == ("some-org/some-name", "some-config")
