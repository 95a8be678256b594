"""Hugging Face Llama checkpoints load into the Transformer and match PyTorch.

Tiny random Llama models are built with ``transformers`` + ``torch`` (the
``llm`` extra; ``make setup`` installs them), saved as safetensors (one file
or shards) with a small WordLevel ``tokenizer.json``, loaded by
:func:`algeval.models.llama.load_llama`, and compared: float32 logits within
1e-4, the same 10 greedy tokens, bfloat16 close.  Without torch these tests
fail with an install hint rather than skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from algeval.errors import ParameterError
from algeval.models.llama import (LLAMA_3_1_8B, cast, generate_greedy, llama_config, load_llama,
                                  param_count, peak_memory)

WORDS = ("A building has rooms room : , . ; ? ( ) door joins and it can be used both ways one-way leads "
         "from into Entering earns points You stand in Walk to through the doors never entering a twice "
         "each you enter adds its some may negative at most walk end with as many possible which do "
         "first Reply only Answer want get few").split()
VOCAB = 97


def _need(name):
    try:
        return __import__(name)
    except ImportError:
        pytest.fail(f"{name} is not installed: run `make setup` (pip install torch==2.13.0 -e '.[test,llm]')")


def write_tokenizer(path: Path) -> None:
    """A WordLevel tokenizer over <unk> <s> </s>, 0..40 and the prompt words, BOS prepended."""
    tk = _need("tokenizers")
    words = ["<unk>", "<s>", "</s>"] + [str(i) for i in range(41)] + WORDS
    words = list(dict.fromkeys(words))[:VOCAB]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    tok = tk.Tokenizer(tk.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tok.post_processor = tk.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.save(str(path / "tokenizer.json"))


def make_checkpoint(path: Path, *, kv=2, layers=2, scaling=True, tied=True, bias=False, shard=None, seed=0):
    """Save a tiny random LlamaForCausalLM (+ tokenizer) at ``path``; returns the torch model."""
    torch = _need("torch")
    tf = _need("transformers")
    torch.manual_seed(seed)
    rope = ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 64} if scaling else None)
    cfg = tf.LlamaConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=kv,
                         intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=1024,
                         rope_scaling=rope, rope_theta=10000.0 if scaling else 500000.0,
                         tie_word_embeddings=tied, attention_bias=bias, rms_norm_eps=1e-5,
                         bos_token_id=1, eos_token_id=2)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger weights than the default init, non-trivial norms and biases
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.15 * torch.randn_like(p))
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kw)
    write_tokenizer(path)
    return model


def torch_logits(model, ids):
    torch = _need("torch")
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids))).logits.float().numpy()


def torch_greedy(model, ids, n):
    torch = _need("torch")
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids):]


CASES = {
    "gqa2-llama3-tied": dict(kv=2, scaling=True, tied=True),
    "mha-noscale-untied-3layers": dict(kv=4, layers=3, scaling=False, tied=False),
    "gqa2-sharded-untied": dict(kv=2, scaling=True, tied=False, shard="40KB"),
    "mqa-attention-bias": dict(kv=1, scaling=False, tied=False, bias=True),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    out = {}
    for i, (name, kw) in enumerate(CASES.items()):
        d = tmp_path_factory.mktemp(name)
        out[name] = (d, make_checkpoint(d, seed=i, **kw))
    return out


IDS = np.random.default_rng(0).integers(0, VOCAB, (2, 40))


@pytest.mark.parametrize("case", list(CASES))
def test_float32_logits_and_greedy_match_pytorch(checkpoints, case):
    path, ref = checkpoints[case]
    if CASES[case].get("shard"):
        assert (path / "model.safetensors.index.json").is_file()
        assert len(list(path.glob("model-*.safetensors"))) > 1
    model, tok = load_llama(path)
    assert model.cfg.tied_unembed == CASES[case]["tied"] and model.cfg.kv_heads == CASES[case]["kv"]
    want = torch_logits(ref, IDS)
    got = np.asarray(model(IDS))
    assert np.abs(want).max() > 1.0  # non-trivial logits
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()
    prompt = tok.encode("You stand in room 3 . Which room do you enter first ? Answer :")
    assert prompt[0] == 1 and tok.eos_ids == (2,)
    assert generate_greedy(model, None, prompt, 10, eos_id=-1) == torch_greedy(ref, prompt, 10)


def test_bfloat16_load_is_close(checkpoints):
    path, ref = checkpoints["gqa2-llama3-tied"]
    model, _ = load_llama(path, dtype="bfloat16")
    assert model.W_E[...].dtype == jnp.bfloat16 and model.cfg.dtype == "bfloat16"
    got = np.asarray(model(IDS).astype(jnp.float32))
    want = torch_logits(ref, IDS)
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()
    back = cast(model, "float32")
    assert back.W_E[...].dtype == jnp.float32 and np.array_equal(np.asarray(back.W_E[...]),
                                                                 np.asarray(model.W_E[...], np.float32))


def test_text_prompt_and_eos_stop(checkpoints):
    path, ref = checkpoints["gqa2-llama3-tied"]
    model, tok = load_llama(path)
    ids = tok.encode("A door joins room 1 and room 2 .")
    first = generate_greedy(model, tok, "A door joins room 1 and room 2 .", 3, eos_id=-1)
    assert first == torch_greedy(ref, ids, 3)
    assert generate_greedy(model, tok, ids, 5, eos_id=first[0]) == first[:1]  # stops at (and keeps) EOS
    assert isinstance(tok.decode(first), str)


def test_sharded_over_two_cpu_devices(checkpoints):
    """Parameters shard over a 2-device mesh and the logits stay the same (fresh process)."""
    path, _ = checkpoints["mha-noscale-untied-3layers"]
    code = ("import numpy as np, jax; from algeval.models.llama import load_llama\n"
            f"m, _ = load_llama({str(path)!r}); ids = np.asarray({IDS[:1].tolist()})\n"
            "assert len(jax.devices()) == 2\n"
            "s = m.blocks[0].attn.W_Q[...].sharding; assert s.spec[0] == 'model', s\n"
            "import json; print(json.dumps(np.asarray(m(ids)).tolist()))")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    one, _ = load_llama(path)
    assert np.abs(np.array(json.loads(r.stdout.strip().splitlines()[-1])) - np.asarray(one(IDS[:1]))).max() < 1e-5


# --- config parsing and errors (torch only to write the files) ---------------------------

def test_v4_config_keys():
    hf = {"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
          "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 128256, "rms_norm_eps": 1e-5,
          "max_position_embeddings": 131072, "rope_theta": 500000.0, "tie_word_embeddings": False,
          "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    assert llama_config(hf, "bfloat16") == LLAMA_3_1_8B
    with pytest.raises(ParameterError, match="rope_type='yarn'"):
        llama_config({**hf, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(ParameterError, match="model_type='gpt2'"):
        llama_config({**hf, "model_type": "gpt2"})
    with pytest.raises(ParameterError, match="intermediate_size"):
        llama_config({k: v for k, v in hf.items() if k != "intermediate_size"})
    with pytest.raises(ParameterError, match="n_kv_heads"):
        llama_config({**hf, "num_key_value_heads": 5})


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_broken_checkpoints_name_the_file_or_tensor(checkpoints, tmp_path):
    from safetensors.numpy import load_file, save_file

    good, _ = checkpoints["gqa2-llama3-tied"]
    d = _copy(good, tmp_path / "no-config")
    (d / "config.json").unlink()
    with pytest.raises(ParameterError, match="config.json"):
        load_llama(d)
    d = _copy(good, tmp_path / "bad-json")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ParameterError, match="not valid JSON"):
        load_llama(d)
    d = _copy(good, tmp_path / "no-tokenizer")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ParameterError, match="tokenizer.json"):
        load_llama(d)
    d = _copy(good, tmp_path / "missing-tensor")
    t = load_file(str(d / "model.safetensors"))
    del t["model.layers.1.mlp.up_proj.weight"]
    save_file(t, str(d / "model.safetensors"))
    with pytest.raises(ParameterError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*missing"):
        load_llama(d)
    d = _copy(good, tmp_path / "wrong-shape")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(ParameterError, match=r"gate_proj\.weight.*\(128, 64\).*\(96, 64\)"):
        load_llama(d)
    d = _copy(good, tmp_path / "truncated")
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5])
    with pytest.raises(ParameterError, match="no valid header"):
        load_llama(d)
    sharded, _ = checkpoints["gqa2-sharded-untied"]
    d = _copy(sharded, tmp_path / "missing-shard")
    next(iter(sorted(d.glob("model-*.safetensors")))).unlink()
    with pytest.raises(ParameterError, match="shard=.*model-00001.*missing"):
        load_llama(d)


def test_llama_3_1_8b_bfloat16_fits_one_80gb_gpu():
    assert param_count(LLAMA_3_1_8B) == 8_030_261_248
    m = peak_memory(LLAMA_3_1_8B, 2048, ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"])
    assert m["params"] == 2 * 8_030_261_248
    assert m["cache"] == 32 * (2048 * 4096 * 2 + 32 * 2048 * 2048 * 4)
    assert m["total"] < 80e9
    assert peak_memory(LLAMA_3_1_8B, 2048)["total"] < 20e9


def test_peak_memory_bounds_xla_memory_analysis():
    """On a scaled-down float32 Llama: the cache term is XLA's output size, the total bounds XLA's peak."""
    import jax
    from flax import nnx

    from algeval.models.transformer import Transformer

    cfg = LLAMA_3_1_8B.replace(n_layers=3, d_model=256, n_heads=8, n_kv_heads=2, d_head=32, d_mlp=896,
                               vocab_size=8000, max_len=2048, dtype="float32", param_dtype="float32")
    hooks = ("blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern")
    fn, state = nnx.eval_shape(lambda: Transformer(cfg)).functional(hooks)
    tokens = jax.ShapeDtypeStruct((1, 1024), jnp.int32)
    ma = jax.jit(lambda s, t: fn(s, t)[1]).lower(state, tokens).compile().memory_analysis()
    est = peak_memory(cfg, 1024, hooks)
    assert abs(ma.output_size_in_bytes - est["cache"]) <= 1024  # XLA adds 8 bytes per tuple element
    used = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
    assert 0.5 * est["total"] <= used <= est["total"], (used, est)


# --- CogEval prompts for LLMs ----------------------------------------------------------

def test_answer_parsing():
    from algeval.sim.llm_eval import parse_answer, parse_route

    assert parse_answer(" room 12.") == 12
    assert parse_answer(" Room 5, then room 7") == 5
    assert parse_answer("I would enter room 3 first") == 3
    assert parse_answer("Rooms 1, 2.\nWhich room?\nAnswer: room 4") == 4  # prompt + reply: after the cue
    assert parse_answer(" Let me think: room 7, no.\nAnswer: 9") == 9  # a reply that restates the cue
    assert parse_answer(" the lobby") is None
    assert parse_route(" 3, 5, 7\nso room 9") == [3, 5, 7]
    assert parse_route("\n\n room 1 -> room 2") == [1, 2]
    assert parse_route("  ") == []


def test_pair_selection_distances_and_determinism():
    from algeval.sim.llm_eval import select_pairs
    from algeval.sim.tasks.cogeval import load_cogeval_graphs
    from algeval.theory.graph import hop_distances

    for name, g in load_cogeval_graphs().items():
        D = hop_distances(g.adj)
        for cond, k in (("shortest-1", 1), ("shortest-2", 2), ("shortest-3", 3), ("shortest-max", D.max())):
            got = select_pairs(g, cond, 3, seed=5)
            assert got == select_pairs(g, cond, 3, seed=5)
            assert len(got) == min(3, int((D == k).sum())) and all(D[s, t] == k for s, t in got)
    g = load_cogeval_graphs()["n21star"]
    assert any(select_pairs(g, "shortest-2", 3, s) != select_pairs(g, "shortest-2", 3, 0) for s in range(1, 6))
    assert select_pairs(load_cogeval_graphs()["n7tree"], "shortest-3", 3, 0) == []


def test_examples_are_relabelled_with_reference_answers():
    from algeval.sim.llm_eval import build_examples
    from algeval.sim.tasks.cogeval import load_cogeval_graphs
    from algeval.theory.shortest_path import next_hops

    graphs = load_cogeval_graphs()
    exs = build_examples(["n7line", "n15star"], pairs=2, relabelings=2, seed=1)
    assert {(e.graph, e.condition) for e in exs} >= {("n7line", "valuePath"), ("n15star", "shortest-max")}
    for e in exs:
        g = graphs[e.graph]
        assert len(set(e.labels)) == g.n and e.prompt.endswith("\nAnswer:")
        assert f"room {e.labels[e.start]}" in e.prompt and "lobby" not in e.prompt
        if e.condition == "valuePath":
            q = next(q for q in g.queries if q.kind == "value-path")
            assert set(e.answers) == {e.labels[v] for v in q.first_steps}  # the data's computed answers
        else:
            assert set(e.answers) == {e.labels[v] for v in next_hops(g.adj, e.start, e.goal)}
        assert e.score(f" room {e.answers[0]}") == (e.answers[0], True)
    assert build_examples(["n7line"], seed=1) == build_examples(["n7line"], seed=1)
    route = [e for e in build_examples(["n13line"], ["shortest-3"], route=True) if e.route]
    assert route and "List the rooms" in route[0].prompt
    good = ", ".join(str(x) for x in route[0].answers[0])
    assert route[0].score(" " + good)[1] and not route[0].score(" " + good[::-1])[1]


def test_llm_eval_end_to_end_on_tiny_checkpoint(checkpoints):
    from algeval.sim.llm_eval import CONDITIONS, evaluate, parse_answer

    path, _ = checkpoints["gqa2-llama3-tied"]
    model, tok = load_llama(path)
    res = evaluate(model, tok, ["n7line"], pairs=1, max_label=40, seed=0, max_new_tokens=6)
    assert json.loads(json.dumps(res))["settings"]["conditions"] == list(CONDITIONS)
    cells = res["accuracy"]["n7line"]
    assert set(cells) == set(CONDITIONS)
    assert [cells[c]["total"] for c in CONDITIONS] == [1, 1, 1, 1, 1]  # n7line: 1 value query, max distance 3
    for r in res["records"]:
        assert r["parsed"] == parse_answer(r["reply"]) and r["correct"] == (r["parsed"] in r["answers"])
    assert all(0 <= c["accuracy"] <= 1 for c in cells.values())


def test_llm_eval_command_line(checkpoints, tmp_path, capsys):
    from algeval.sim.llm_eval import main

    path, _ = checkpoints["gqa2-llama3-tied"]
    out = tmp_path / "res.json"
    assert main([str(path), "--dtype", "float32", "--graphs", "n7tree", "--conditions", "valuePath",
                 "shortest-3", "--max-new-tokens", "3", "--out", str(out)]) == 0
    acc = json.loads(out.read_text())["accuracy"]["n7tree"]
    assert acc["valuePath"]["total"] == 1 and acc["shortest-3"] == {"correct": 0, "total": 0, "accuracy": None}
    assert main([str(tmp_path / "nowhere")]) == 2 and "checkpoint=" in capsys.readouterr().err
