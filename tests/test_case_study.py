"""The LLM case study: node mentions -> graph nodes, the analyses on a tiny random Llama, the CLI.

Tokenizers are small WordLevel vocabularies behind the pre-tokenizers of the
real families, so the mention mapping meets what an 8B model's tokenizer does
to ``"room 34"``: Llama-2 (``"▁"`` alone, then one token per digit),
Llama-3 (``" "`` alone, digits in groups of three) and GPT-2 (``" 34"`` one
token).  The tiny checkpoint comes from ``tests/test_llama.py``'s
:func:`make_checkpoint` (transformers + torch, random weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from algeval.sim.case_study import mention_spans, token_mentions
from algeval.sim.tasks.cogeval import load_cogeval_graphs

LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def make_tokenizer(style: str, texts):
    """A WordLevel tokenizer whose vocabulary is every piece of ``texts`` under ``style``'s pre-tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    if style == "llama2":
        norm = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        pre = pre_tokenizers.Split(Regex(r"▁?[A-Za-z]+|▁|\d|[^▁\dA-Za-z]"), behavior="isolated")
        dec = decoders.Metaspace()
    elif style == "llama3":
        norm = None
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(LLAMA3_RE), behavior="isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        dec = decoders.ByteLevel()
    elif style == "gpt2":
        norm, pre, dec = None, pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    else:
        raise ValueError(style)
    pieces = set()
    for t in texts:
        s = norm.normalize_str(t) if norm else t
        pieces |= {p for p, _ in pre.pre_tokenize_str(s)}
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>"] + sorted(pieces))}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    if norm:
        tok.normalizer = norm
    tok.pre_tokenizer, tok.decoder = pre, dec
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tok


def pieces(tok, ids, pos):
    return [tok.id_to_token(ids[p]) for p in pos]


# --- the mention mapping ------------------------------------------------------------------

HAND = "A door joins room 12 and room 3.\nEntering room 3 earns 50 points. You may walk through at most 7 doors."


@pytest.mark.parametrize("style, want_all, want_pieces", [
    # <s> ▁A ▁door ▁joins ▁room ▁ 1 2 ▁and ▁room ▁ 3 . \n Entering ▁room ▁ 3 ▁earns ▁ 5 0 ...
    ("llama2", [(1, (6, 7)), (0, (11,)), (0, (17,))], [["1", "2"], ["3"], ["3"]]),
    # <s> A Ġdoor Ġjoins Ġroom Ġ 12 Ġand Ġroom Ġ 3 .Ċ Entering Ġroom Ġ 3 Ġearns ...  (".\n" is one piece)
    ("llama3", [(1, (6,)), (0, (10,)), (0, (15,))], [["12"], ["3"], ["3"]]),
    # <s> A Ġdoor Ġjoins Ġroom Ġ12 Ġand Ġroom Ġ3 . Ċ Entering Ġroom Ġ3 Ġearns Ġ50 ...
    ("gpt2", [(1, (5,)), (0, (8,)), (0, (13,))], [["Ġ12"], ["Ġ3"], ["Ġ3"]]),
])
def test_mentions_on_a_hand_checked_prompt(style, want_all, want_pieces):
    tok = make_tokenizer(style, [HAND])
    assert mention_spans(HAND, (3, 12)) == [(1, 18, 20), (0, 30, 31), (0, 47, 48)]
    ids, got = token_mentions(tok, HAND, (3, 12), span="all")
    assert got == want_all
    assert [pieces(tok, ids, p) for _, p in got] == want_pieces
    _, last = token_mentions(tok, HAND, (3, 12))
    assert last == [(v, p[-1:]) for v, p in want_all]
    if style != "gpt2":  # the leading-space token just before each name is not part of it
        assert all(tok.id_to_token(ids[p[0] - 1]) in ("▁", "Ġ") for _, p in got)


def test_multi_token_llama3_number_and_bad_labels():
    text = "room 1234 and room 7."
    tok = make_tokenizer("llama3", [text])
    ids, got = token_mentions(tok, text, (1234, 7), span="all")
    assert [pieces(tok, ids, p) for _, p in got] == [["123", "4"], ["7"]]
    with pytest.raises(ValueError, match="room 7"):
        mention_spans(text, (1234, 8))
    from algeval.errors import ParameterError
    with pytest.raises(ParameterError, match="span"):
        token_mentions(tok, text, (1234, 7), span="first")


@pytest.mark.parametrize("style", ["llama2", "llama3"])
def test_mentions_of_an_n7line_prompt(style):
    """Every room mention of a real prompt maps to its node; other numbers (7 rooms, 50 points) do not."""
    from algeval.sim.llm_eval import build_examples

    g = load_cogeval_graphs()["n7line"]
    ex = build_examples(["n7line"], ["valuePath"], seed=3)[0]
    tok = make_tokenizer(style, [ex.prompt])
    ids, got = token_mentions(tok, ex.prompt, ex.labels, span="all")
    count = np.zeros(g.n, int)
    for v, p in got:
        count[v] += 1
        assert "".join(pieces(tok, ids, p)).lstrip("Ġ") == str(ex.labels[v])
    deg = (g.adj.sum(0) + g.adj.sum(1)).astype(int)  # directed: each door names both rooms once
    want = 1 + deg + (g.rewards != 0) + (np.arange(g.n) == ex.start)  # room list, doors, rewards, question
    assert count.tolist() == want.tolist()
    assert len(got) == len(mention_spans(ex.prompt, ex.labels)) == int(want.sum())


# --- hooks and memory ---------------------------------------------------------------------------

def test_forward_caches_exactly_the_requested_hooks(monkeypatch):
    """The analyses' forward asks for COLLECT_HOOKS only, and the cache then holds exactly those names."""
    import jax
    import jax.numpy as jnp

    from algeval.models import Transformer, TransformerConfig
    from algeval.models.hooks import hook_names
    from algeval.sim.analyses import collect
    from algeval.sim.analyses.common import COLLECT_HOOKS
    from algeval.sim.case_study import mention_layout
    from algeval.sim.llm_eval import build_examples

    g = load_cogeval_graphs()["n7line"]
    exs = build_examples(["n7line"], ["valuePath", "shortest-1"], pairs=1, seed=0)
    tok = make_tokenizer("llama2", [e.prompt for e in exs])
    cfg = TransformerConfig(vocab_size=tok.get_vocab_size(), max_len=512, n_layers=2, d_model=16, n_heads=2,
                            d_head=8, d_mlp=32,
                            norm="rmsnorm", mlp="swiglu", positions="rotary", attention="causal")
    model = Transformer(cfg, seed=0)
    asked = []
    real = Transformer.functional

    def spy(self, names_filter=(), *a, **k):
        asked.append(tuple(names_filter))
        return real(self, names_filter, *a, **k)

    monkeypatch.setattr(Transformer, "functional", spy)
    layout, ids = mention_layout(g, exs, [token_mentions(tok, e.prompt, e.labels) for e in exs])
    acts = collect(model, layout, 2, tokens=ids)
    assert asked == [COLLECT_HOOKS]
    assert acts.reps.shape == (len(exs), 3, 7, 16) and acts.attn.shape == (len(exs), 2, 2, ids.shape[1])
    fn, state = real(model, COLLECT_HOOKS)
    _, cache = jax.jit(fn)(state, jnp.asarray(ids[:1, :16]))
    want = {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post",
            "blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    assert set(cache) == want and len(hook_names(cfg)) > 4 * len(want)
    # the layout batch marks exactly the mention positions with their node's vertex token
    v = layout.tokens - layout.vocab.vertex_offset
    for i, e in enumerate(exs):
        _, ments = token_mentions(tok, e.prompt, e.labels)
        assert sorted(p[0] for _, p in ments) == np.flatnonzero(v[i] >= 0).tolist()
        assert layout.loss_mask[i].sum() == 1 and ids[i, np.flatnonzero(layout.loss_mask[i])[0]] == \
            tok.token_to_id(":")


def test_8b_case_study_memory_fits_80gb():
    """memory.md: the 8B bfloat16 case study at its longest prompt (n21star, 1304 tokens) fits 80 GB."""
    from algeval.errors import ParameterError
    from algeval.models.llama import LLAMA_3_1_8B
    from algeval.sim.case_study import fit_chunk, run_memory

    T = 1304
    m = run_memory(LLAMA_3_1_8B, T, 4, control=True)
    assert m["cache"] == 4 * (T * 4096 * 2 * 33 + 32 * 32 * T * T * 4)  # resid_pre + 32 resid_post + 32 patterns
    assert m["total"] == m["params"] + m["control_params"] + m["cache"] + max(m["layer"], m["logits"])
    assert 60e9 < m["total"] < 80e9
    assert fit_chunk(LLAMA_3_1_8B, T, 16, True, int(80e9)) == 6  # 79.8 GB; 7 prompts would need 87.7
    assert fit_chunk(LLAMA_3_1_8B, T, 16, False, int(80e9)) == 8
    assert fit_chunk(LLAMA_3_1_8B, T, 16, True, int(0.75 * 80e9)) == 3  # XLA's default 75% preallocation
    assert fit_chunk(LLAMA_3_1_8B, T, 8, True, None) == 8
    with pytest.raises(ParameterError, match="memory"):
        fit_chunk(LLAMA_3_1_8B, T, 8, True, int(30e9))


# --- the pipeline and the command line -------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random Llama with a Llama-2-style tokenizer covering every CogEval prompt's pieces."""
    from test_llama import VOCAB, make_checkpoint

    from algeval.sim.llm_eval import build_examples

    d = tmp_path_factory.mktemp("tiny-llama")
    make_checkpoint(d, kv=2, layers=2, scaling=False, tied=True)
    tok = make_tokenizer("llama2", [e.prompt for e in build_examples(None, pairs=3, seed=0)])
    assert tok.get_vocab_size() <= VOCAB
    tok.save(str(d / "tokenizer.json"))
    return d


def test_cli_end_to_end_on_n7line(checkpoint, tmp_path, capsys):
    from algeval.sim.cli import main

    out = tmp_path / "cs"
    rc = main(["case-study", "--model", str(checkpoint), "--graph", "n7line", "--condition", "valuePath",
               "--condition", "shortest-2", "--seeds", "3", "--dtype", "float32", "--perms", "8",
               "--max-new-tokens", "2", "--chunk", "4", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert "n7line: verdict:" in capsys.readouterr().out
    res = json.loads((out / "n7line" / "results.json").read_text())
    cs = res["case_study"]
    assert cs["examples"] == 12 and res["batch"]["examples"] == 12  # (1 value query + 3 pairs) x 3 relabellings
    for sec in ("attention", "geometry", "orders", "probes", "verdict", "timing"):
        assert sec in res
    assert res["attention"]["per_layer"]["axes"] == ["layer", "stat"]
    assert res["attention"]["per_layer"]["shape"][0] == 2 and res["model"]["n_layers"] == 2
    assert {r["algorithm"] for r in res["verdict"]["table"]} >= {"BFS", "DFS", "path-merging"}
    assert 0 <= res["accuracy"] <= 1 and all("reply" in r for r in cs["records"])
    arr = np.load(out / "n7line" / "arrays.npz")
    assert arr["geometry.reps"].shape == (12, 3, 7, 64)
    T = res["batch"]["seq_len"]
    assert arr["layout.tokens"].shape == (12, T)
    # the records' mention positions are the layout's vertex tokens
    lay = arr["layout.tokens"] - 2
    for i, r in enumerate(cs["records"]):
        assert sorted(p for v, ps in r["mentions"] for p in ps) == np.flatnonzero(lay[i] >= 0).tolist()
        assert all(lay[i, ps[0]] == v for v, ps in r["mentions"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["graphs"]["n7line"]["verdict"] == res["verdict"]["verdict"]
    assert "Case study" in (out / "n7line" / "report.md").read_text()
    assert not list(out.rglob(".*"))  # no temporary files left


def test_bad_inputs_exit_2(checkpoint, tmp_path, capsys):
    from algeval.sim.cli import main

    def run(model, *extra):
        rc = main(["case-study", "--model", str(model), "--graph", "n7line", "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        return err

    assert "checkpoint=" in run(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / "config.json").write_text("{not json")
    assert "config.json" in run(broken) and "not valid JSON" in run(broken)
    (broken / "config.json").unlink()
    assert "config.json" in run(broken)
    shutil.copy(checkpoint / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"\x05")
    assert "model.safetensors" in run(broken)
    assert "--graph='n99'" in run(checkpoint, "--graph", "n99")
    assert "--condition='bogus'" in run(checkpoint, "--condition", "bogus")
    assert "--seeds=0" in run(checkpoint, "--seeds", "0")
    assert "--seeds=1" in run(checkpoint, "--condition", "valuePath", "--seeds", "1")  # one prompt only
    assert "memory=" in run(checkpoint, "--memory-gb", "1e-6")
    assert "--memory-gb=0.0" in run(checkpoint, "--memory-gb", "0")
    assert not (tmp_path / "o").exists()
