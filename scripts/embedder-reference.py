#!/usr/bin/env python3
"""A second, independent implementation of the built-in embedder, for checking the Swift one.

Tokenizes with Hugging Face's `tokenizers` (BertWordPieceTokenizer over the model's vocabulary,
lower-cased with accents stripped, as all-MiniLM-L6-v2 is configured) and runs the BERT encoder
in NumPy straight from the safetensors file, then mean-pools and L2-normalises. Writes, for a
fixed list of sentences, their token ids, the first dimensions of their vectors and their
pairwise cosines: Tests/PortcullisTests/Data/embedder-reference.json, which EmbedderTests
compares the Swift embedder against.

Usage: python3 scripts/embedder-reference.py [model-directory]   (needs numpy and tokenizers)
"""
import json, struct, sys, math
import numpy as np
from tokenizers import BertWordPieceTokenizer

MODEL = sys.argv[1] if len(sys.argv) > 1 else "models/all-MiniLM-L6-v2"
OUT = "Tests/PortcullisTests/Data/embedder-reference.json"
MAX_TOKENS = 256

SENTENCES = [
    "What is the capital of France?",
    "Which city is France's capital?",
    "What is the capital of Germany?",
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "Какая столица Франции?",
    "Назови столицу Франции.",
    "Какая столица Германии?",
    "Ёжик в тумане, йогурт и щи!",
    "Café naïve résumé — CRÈME brûlée…",
    "東京は日本の首都です。",
    "tab\tand\nnewline  spaces   here",
    "",
    "a " * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Price: $1,234.56 (approx.) #tag @user 50% off!!!",
]

def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        f.seek(0)
        blob = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[info["dtype"]]
        tensors[name] = np.frombuffer(blob[base + start: base + end], dtype=dtype).reshape(info["shape"])
    return tensors

def layer_norm(x, w, b, eps=1e-12):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b

def gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))

def encode(t, ids):
    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: len(ids)] \
        + t["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x.astype(np.float64), t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    heads, size = 12, 32
    for layer in range(6):
        p = f"encoder.layer.{layer}."
        lin = lambda v, name: v @ t[p + name + ".weight"].T.astype(np.float64) + t[p + name + ".bias"]
        q, k, v = (lin(x, "attention.self." + n).reshape(len(ids), heads, size).transpose(1, 0, 2) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(1, 0, 2).reshape(len(ids), heads * size)
        x = layer_norm(x + lin(context, "attention.output.dense"), t[p + "attention.output.LayerNorm.weight"], t[p + "attention.output.LayerNorm.bias"])
        x = layer_norm(x + lin(gelu(lin(x, "intermediate.dense")), "output.dense"), t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)

def main():
    tokenizer = BertWordPieceTokenizer(f"{MODEL}/vocab.txt", lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True)
    tokenizer.enable_truncation(MAX_TOKENS)
    tensors = load(f"{MODEL}/model.safetensors")
    cases, vectors = [], []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        vector = encode(tensors, ids)
        vectors.append(vector)
        cases.append({"text": sentence, "ids": ids, "head": [round(float(v), 6) for v in vector[:8]]})
    cosines = [[round(float(a @ b), 6) for b in vectors] for a in vectors]
    with open(OUT, "w") as out:
        json.dump({"model": "all-MiniLM-L6-v2", "max_tokens": MAX_TOKENS, "cases": cases, "cosines": cosines}, out, ensure_ascii=False, indent=1)
        out.write("\n")
    print(f"wrote {OUT}: {len(cases)} sentences")

main()
