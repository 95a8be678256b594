"""Hugging Face Llama-family checkpoints in the one :class:`Transformer` class.

:func:`load_llama` reads a checkpoint directory (``config.json``,
``model.safetensors`` or shards ``model-*.safetensors`` listed by
``model.safetensors.index.json``, ``tokenizer.json``) without torch.  Hugging
Face's ``nn.Linear`` stores ``weight (out, in)`` and computes ``y = x W^T``;
with ``H`` query heads, ``KV`` key/value heads of width ``E``, residual ``D``,
MLP ``M``, vocabulary ``V`` the weights map as::

    model.embed_tokens.weight (V, D)            -> W_E (V, D)
    layers.l.self_attn.q_proj.weight (H*E, D)   -> W_Q[h, d, e] = q[h*E + e, d]    (H, D, E)
    layers.l.self_attn.k_proj/v_proj (KV*E, D)  -> W_K/W_V (KV, D, E)  likewise
    layers.l.self_attn.o_proj.weight (D, H*E)   -> W_O[h, e, d] = o[d, h*E + e]    (H, E, D)
    [q/k/v/o_proj.bias (attention_bias)         -> b_Q (H, E), b_K/b_V (KV, E), b_O (D,)]
    layers.l.mlp.gate_proj/up_proj (M, D)       -> W_gate/W_in = weight^T (D, M)
    layers.l.mlp.down_proj (D, M)               -> W_out = weight^T (M, D)
    layers.l.input_layernorm / post_attention_layernorm.weight -> blocks[l].ln1.w / ln2.w
    model.norm.weight                           -> ln_final.w
    lm_head.weight (V, D)                       -> W_U = weight^T (D, V)   [absent when tied]

Hugging Face checkpoints already use the "rotate half" rotary layout of
:mod:`algeval.models.rotary`, so no row permutation is needed; GQA's
``repeat_kv`` (query head ``h`` reads kv head ``h // (H/KV)``) is the
Transformer's own rule.

Safetensors files are read through their documented layout (8-byte
little-endian header length, a JSON header of ``{name: {dtype, shape,
data_offsets}}``, then raw little-endian data) with a read-only ``np.memmap``
and ``ml_dtypes`` for bfloat16: the ``safetensors`` package's numpy backend
cannot return bfloat16.  Tensors are converted one at a time and placed on
the devices at once, so host memory peaks at about one tensor; the model is
built by ``nnx.eval_shape`` (no random init) and filled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from algeval.errors import ParameterError
from algeval.models.config import RopeScaling, TransformerConfig
from algeval.models.hooks import HookContext, resolve_names
from algeval.models.transformer import Transformer

MODEL_TYPES = ("llama",)
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
              "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}
_NP = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}
_BYTES = {"float32": 4, "bfloat16": 2, "float64": 8}

#: Llama-3.1-8B's shape (bfloat16), for memory planning; ``max_len`` is its context length.
LLAMA_3_1_8B = TransformerConfig(
    vocab_size=128256, max_len=131072, n_layers=32, d_model=4096, n_heads=32, d_head=128, d_mlp=14336,
    n_kv_heads=8, norm="rmsnorm", norm_eps=1e-5, mlp="swiglu", positions="rotary", rope_theta=500000.0,
    rope_scaling=RopeScaling(8.0, 1.0, 4.0, 8192), use_bias=False, pad_token_id=None,
    dtype="bfloat16", param_dtype="bfloat16")


# --- config --------------------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ParameterError(what, str(path), "is missing from the checkpoint directory")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParameterError(what, str(path), f"is not valid JSON ({e})") from None


def llama_config(hf: dict, dtype: str = "float32") -> TransformerConfig:
    """The :class:`TransformerConfig` of a Hugging Face Llama ``config.json`` (v4 or v5 keys)."""
    def need(key):
        if key not in hf:
            raise ParameterError("config.json", key, "is missing")
        return hf[key]

    mt = hf.get("model_type")
    if mt not in MODEL_TYPES:
        raise ParameterError("config.json model_type", mt, f"unsupported; supported: {', '.join(MODEL_TYPES)}")
    if hf.get("hidden_act", "silu") != "silu":
        raise ParameterError("config.json hidden_act", hf["hidden_act"], "only 'silu' (SwiGLU) is supported")
    if hf.get("mlp_bias", False):
        raise ParameterError("config.json mlp_bias", True, "MLP biases are not supported")
    if dtype not in _NP:
        raise ParameterError("dtype", dtype, f"must be one of {', '.join(_NP)}")
    D, H = int(need("hidden_size")), int(need("num_attention_heads"))
    # rotary: v4 writes rope_theta + rope_scaling, v5 writes rope_parameters (theta inside)
    rp = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    theta = float(rp.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind == "default":
        scaling = None
    elif kind == "llama3":
        scaling = RopeScaling(float(rp["factor"]), float(rp["low_freq_factor"]), float(rp["high_freq_factor"]),
                              int(rp["original_max_position_embeddings"]))
    else:
        raise ParameterError("config.json rope_type", kind, "supported: default, llama3")
    try:
        return TransformerConfig(
            vocab_size=int(need("vocab_size")), max_len=int(hf.get("max_position_embeddings", 2048)),
            n_layers=int(need("num_hidden_layers")), d_model=D, n_heads=H,
            d_head=int(hf.get("head_dim") or D // H), d_mlp=int(need("intermediate_size")),
            n_kv_heads=int(hf.get("num_key_value_heads") or H), attention="causal", norm="rmsnorm",
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu", positions="rotary",
            rope_theta=theta, rope_scaling=scaling, tied_unembed=bool(hf.get("tie_word_embeddings", False)),
            use_bias=bool(hf.get("attention_bias", False)), pad_token_id=None, dtype=dtype, param_dtype=dtype)
    except ParameterError as e:
        raise ParameterError(f"config.json {e.name}", e.value, e.limit) from None


# --- safetensors ---------------------------------------------------------------------

class SafetensorsIndex:
    """Read-only, lazy access to the tensors of one or more safetensors files."""

    def __init__(self, files: list[Path], index_file: str | None = None):
        self.where: dict[str, tuple[Path, str, tuple[int, ...], int, int]] = {}
        self._maps: dict[Path, np.memmap] = {}
        for f in files:
            if not f.is_file():
                raise ParameterError("shard", str(f), f"is listed by {index_file} but missing")
            with open(f, "rb") as fh:
                raw = fh.read(8)
                n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
                size = f.stat().st_size
                if not 0 < n <= size - 8:
                    raise ParameterError("safetensors file", str(f), "has no valid header")
                try:
                    header = json.loads(fh.read(n))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ParameterError("safetensors file", str(f), "has a malformed JSON header") from None
            header.pop("__metadata__", None)
            for name, h in header.items():
                dt, shape, (b, e) = h["dtype"], tuple(h["shape"]), h["data_offsets"]
                if dt not in _ST_DTYPES:
                    raise ParameterError(f"tensor {name}", dt, f"unsupported safetensors dtype (file {f.name})")
                if e - b != math.prod(shape) * np.dtype(_ST_DTYPES[dt]).itemsize or 8 + n + e > size:
                    raise ParameterError(f"tensor {name}", shape, f"byte range does not fit (file {f.name})")
                self.where[name] = (f, dt, shape, 8 + n + b, 8 + n + e)

    @classmethod
    def from_dir(cls, path: Path) -> "SafetensorsIndex":
        index = path / "model.safetensors.index.json"
        if index.is_file():
            wm = _read_json(index, "model.safetensors.index.json").get("weight_map")
            if not isinstance(wm, dict):
                raise ParameterError("model.safetensors.index.json", str(index), "has no weight_map")
            return cls(sorted({path / v for v in wm.values()}), index.name)
        single = path / "model.safetensors"
        if not single.is_file():
            raise ParameterError("model.safetensors", str(single),
                                 "is missing (and there is no model.safetensors.index.json)")
        return cls([single])

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.where[name][2] if name in self.where else None

    def get(self, name: str) -> np.ndarray:
        f, dt, shape, b, e = self.where[name]
        if f not in self._maps:
            self._maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
        return self._maps[f][b:e].view(_ST_DTYPES[dt]).reshape(shape)


# --- the weight map ------------------------------------------------------------------

def _sources(cfg: TransformerConfig) -> dict[tuple, tuple[str | None, tuple, object]]:
    """``{our param path: (hf name or None for zeros, hf shape, hf -> ours)}``."""
    H, KV, D, E, M, V = cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.vocab_size
    ident, tr = (lambda w: w), (lambda w: w.T)
    heads = lambda n: lambda w: w.reshape(n, E, D).transpose(0, 2, 1)  # noqa: E731
    out = {("W_E",): ("model.embed_tokens.weight", (V, D), ident),
           ("ln_final", "w"): ("model.norm.weight", (D,), ident)}
    if not cfg.tied_unembed:
        out[("W_U",)] = ("lm_head.weight", (V, D), tr)
        if cfg.use_bias:
            out[("b_U",)] = (None, (V,), None)
    for l in range(cfg.n_layers):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        out.update({
            ("blocks", l, "ln1", "w"): (p + "input_layernorm.weight", (D,), ident),
            ("blocks", l, "ln2", "w"): (p + "post_attention_layernorm.weight", (D,), ident),
            ("blocks", l, "attn", "W_Q"): (a + "q_proj.weight", (H * E, D), heads(H)),
            ("blocks", l, "attn", "W_K"): (a + "k_proj.weight", (KV * E, D), heads(KV)),
            ("blocks", l, "attn", "W_V"): (a + "v_proj.weight", (KV * E, D), heads(KV)),
            ("blocks", l, "attn", "W_O"): (a + "o_proj.weight", (D, H * E), lambda w: w.T.reshape(H, E, D)),
            ("blocks", l, "mlp", "W_gate"): (p + "mlp.gate_proj.weight", (M, D), tr),
            ("blocks", l, "mlp", "W_in"): (p + "mlp.up_proj.weight", (M, D), tr),
            ("blocks", l, "mlp", "W_out"): (p + "mlp.down_proj.weight", (D, M), tr),
        })
        if cfg.use_bias:
            out.update({
                ("blocks", l, "attn", "b_Q"): (a + "q_proj.bias", (H * E,), lambda w: w.reshape(H, E)),
                ("blocks", l, "attn", "b_K"): (a + "k_proj.bias", (KV * E,), lambda w: w.reshape(KV, E)),
                ("blocks", l, "attn", "b_V"): (a + "v_proj.bias", (KV * E,), lambda w: w.reshape(KV, E)),
                ("blocks", l, "attn", "b_O"): (a + "o_proj.bias", (D,), ident),
                ("blocks", l, "mlp", "b_in"): (None, (M,), None),
                ("blocks", l, "mlp", "b_out"): (None, (D,), None),
            })
    return out


#: mesh axis sharded per parameter name (tensor parallelism; replicated when not divisible)
_SHARD_AXIS = {"W_Q": 0, "W_K": 0, "W_V": 0, "W_O": 0, "W_gate": 1, "W_in": 1, "W_out": 0, "W_E": 1, "W_U": 1}


def placement(name: str, shape: tuple, devices) -> jax.Device | NamedSharding:
    """Where a parameter goes: the one device, or a ``NamedSharding`` over a 1-D ``"model"`` mesh."""
    if len(devices) == 1:
        return devices[0]
    mesh = Mesh(np.asarray(devices), ("model",))
    ax = _SHARD_AXIS.get(name)
    spec = [None] * len(shape)
    if ax is not None and shape[ax] % len(devices) == 0:
        spec[ax] = "model"
    return NamedSharding(mesh, PartitionSpec(*spec))


def _nested_set(tree, path, value):
    for k in path[:-1]:
        tree = tree[k]
    tree[path[-1]] = value


def load_llama(path, dtype: str = "float32", devices=None):
    """``(model, tokenizer)`` from a Hugging Face Llama checkpoint directory; see the module docstring.

    ``dtype`` ("float32" or "bfloat16") is both the parameter and the
    activation dtype.  ``devices`` (default ``jax.devices()``): parameters
    are sharded over them (heads / MLP width / vocabulary), or placed on the
    one device.  Raises :class:`ParameterError` naming the file or tensor
    that is missing, malformed or of the wrong shape.
    """
    path = Path(path)
    if not path.is_dir():
        raise ParameterError("checkpoint", str(path), "is not a directory")
    cfg = llama_config(_read_json(path / "config.json", "config.json"), dtype)
    tokenizer = load_tokenizer(path)
    st = SafetensorsIndex.from_dir(path)
    devices = list(jax.devices() if devices is None else devices)
    abstract = nnx.eval_shape(lambda: Transformer(cfg, seed=0))
    graphdef, state = nnx.split(abstract)
    params = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    npdt = _NP[dtype]
    for key, (name, hf_shape, fn) in _sources(cfg).items():
        if name is None:
            arr = np.zeros(hf_shape, npdt)
        else:
            got = st.shape(name)
            if got is None:
                raise ParameterError("tensor", name, "is missing from the checkpoint's safetensors files")
            if got != hf_shape:
                raise ParameterError(f"tensor {name}", got, f"shape does not fit config.json, which needs {hf_shape}")
            arr = np.ascontiguousarray(fn(st.get(name)).astype(npdt))
        _nested_set(params, key, jax.device_put(arr, placement(key[-1], arr.shape, devices)))
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state), tokenizer


# --- tokenizer -----------------------------------------------------------------------

class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the checkpoint's end-of-sequence ids."""

    def __init__(self, tok, eos_ids=()):
        self.tok, self.eos_ids = tok, tuple(int(i) for i in eos_ids)

    def encode(self, text: str) -> list[int]:
        """Token ids, with the special tokens the tokenizer's post-processor adds (BOS)."""
        return self.tok.encode(text).ids

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()


def load_tokenizer(path) -> Tokenizer:
    """The checkpoint's ``tokenizer.json``; EOS ids from ``generation_config.json`` or ``config.json``."""
    from tokenizers import Tokenizer as HFTokenizer

    path = Path(path)
    tj = path / "tokenizer.json"
    if not tj.is_file():
        raise ParameterError("tokenizer.json", str(tj), "is missing from the checkpoint directory")
    try:
        tok = HFTokenizer.from_file(str(tj))
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
        raise ParameterError("tokenizer.json", str(tj), f"is not a readable tokenizer ({e})") from None
    eos = None
    for f in ("generation_config.json", "config.json"):
        if (path / f).is_file() and eos is None:
            eos = _read_json(path / f, f).get("eos_token_id")
    eos = () if eos is None else (eos if isinstance(eos, list) else [eos])
    return Tokenizer(tok, eos)


# --- generation ----------------------------------------------------------------------

_STEP: dict = {}


def _step_fn(graphdef):
    """jitted ``(state, tokens (1, T), cur) -> argmax logits at position cur - 1`` (one per graph)."""
    if graphdef not in _STEP:
        def step(state, tokens, cur):
            m = nnx.merge(graphdef, state)
            ctx = HookContext(frozenset({"ln_final.hook_normalized"}))
            m.forward(tokens, ctx)  # the full logits are dead code: XLA drops them
            x = jax.lax.dynamic_index_in_dim(ctx.cache["ln_final.hook_normalized"][0], cur - 1, 0, False)
            W_U = m.W_E[...].T if m.cfg.tied_unembed else m.W_U[...]
            logits = (x @ W_U.astype(x.dtype)).astype(jnp.float32)
            if not m.cfg.tied_unembed and m.cfg.use_bias:
                logits = logits + m.b_U[...].astype(jnp.float32)
            return jnp.argmax(logits)
        _STEP[graphdef] = jax.jit(step)
    return _STEP[graphdef]


def generate_greedy(model: Transformer, tokenizer, prompt, max_new_tokens: int = 16, eos_id=None,
                    bucket: int = 64) -> list[int]:
    """Greedy decoding: the new token ids (stopping after an EOS id, included).

    ``prompt`` is text (needs ``tokenizer``) or token ids.  Without a KV
    cache: each step reruns the whole sequence, right-padded to a multiple
    of ``bucket`` so one compilation serves every step (causal attention:
    padding after position ``t`` cannot change the logits at ``t``).
    ``eos_id``: an id or ids (``()``: never stop early); default the tokenizer's.
    """
    ids = tokenizer.encode(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
    if not ids:
        raise ParameterError("prompt", prompt, "is empty")
    if eos_id is None:
        eos = set(tokenizer.eos_ids) if tokenizer is not None else set()
    else:
        eos = {int(eos_id)} if np.ndim(eos_id) == 0 else {int(i) for i in eos_id}
    total = len(ids) + max_new_tokens
    if total > model.cfg.max_len:
        raise ParameterError("max_new_tokens", max_new_tokens,
                             f"prompt ({len(ids)}) + new tokens exceeds max_len={model.cfg.max_len}")
    width = min(-(-total // bucket) * bucket, model.cfg.max_len)
    buf = np.zeros((1, width), np.int32)
    buf[0, : len(ids)] = ids
    graphdef, state = nnx.split(model)
    step = _step_fn(graphdef)
    tokens, new = jnp.asarray(buf), []
    for cur in range(len(ids), total):
        t = int(step(state, tokens, cur))
        new.append(t)
        if t in eos:
            break
        tokens = tokens.at[0, cur].set(t)
    return new


# --- dtype and memory ----------------------------------------------------------------

def cast(model: Transformer, dtype: str) -> Transformer:
    """A copy of ``model`` with parameters and activations in ``dtype`` (sharding kept)."""
    if dtype not in _NP:
        raise ParameterError("dtype", dtype, f"must be one of {', '.join(_NP)}")
    cfg = model.cfg.replace(dtype=dtype, param_dtype=dtype)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, seed=0)))
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)),
                                                 nnx.to_pure_dict(nnx.state(model, nnx.Param))))
    return nnx.merge(graphdef, state)


def param_count(cfg: TransformerConfig) -> int:
    """``V*D*(1 + untied) + L*(2*H*E*D + 2*KV*E*D + 3*D*M + 2*D) + D`` (+ biases)."""
    H, KV, D, E, M, V, L = (cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head, cfg.d_mlp,
                            cfg.vocab_size, cfg.n_layers)
    n = V * D * (1 if cfg.tied_unembed else 2) + L * (2 * H * E * D + 2 * KV * E * D + 3 * D * M + 2 * D) + D
    if cfg.use_bias:
        n += L * ((H + 2 * KV) * E + D + M + D) + (0 if cfg.tied_unembed else V)
    return n


def _site_elems(cfg: TransformerConfig, name: str, T: int) -> tuple[int, int]:
    """``(elements per example, bytes per element)`` of one hook's activation."""
    H, KV, D, E, M = cfg.n_heads, cfg.kv_heads, cfg.d_model, cfg.d_head, cfg.d_mlp
    b = _BYTES[cfg.dtype]
    site = name.split(".", 2)[-1] if name.startswith("blocks.") else name
    if site in ("attn.hook_attn_scores", "attn.hook_pattern"):
        return H * T * T, 4  # computed in float32
    if site in ("attn.hook_q", "attn.hook_rot_q", "attn.hook_z"):
        return T * H * E, b
    if site in ("attn.hook_k", "attn.hook_v", "attn.hook_rot_k"):
        return T * KV * E, b
    if site == "attn.hook_result":
        return T * H * D, b
    if site.startswith("mlp."):
        return T * M, b
    return T * D, b


def peak_memory(cfg: TransformerConfig, seq_len: int, hooks=(), batch: int = 1) -> dict[str, int]:
    """Estimated peak device bytes of one forward pass that caches ``hooks`` (names or globs).

    With ``B`` batch, ``T`` tokens, ``b`` bytes per activation element
    (2 in bfloat16), ``P`` = :func:`param_count`::

        params    = P * b_param
        cache     = B * sum_{requested hooks} elements(hook) * bytes(hook)
                    (scores/pattern: H*T*T float32; q/z: T*H*E; k/v: T*KV*E;
                     result: T*H*D; mlp: T*M; residual-like: T*D)
        layer     = B * (2*H*T*T*4              attention scores + softmax of ONE layer, float32
                         + (H + 2*H)*T*E*b      q and k, v repeated to H heads
                         + 3*T*M*b + 4*T*D*b)   MLP gate/up/product and residual temporaries
        logits    = B * T * V * b
        total     = params + cache + max(layer, logits)

    Layers run one after another, so only one layer's working set is live;
    a cached activation stays live to the end.  Returns every term and
    ``total`` in bytes.  Checked against XLA's compiled memory analysis of a
    scaled-down float32 model (tests/test_llama.py): ``cache`` is exact and
    ``total`` an upper bound (XLA fuses the masking and softmax, so about one
    ``H*T*T`` float32 array is live per layer, not two).
    """
    H, D, E, M, V = cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp, cfg.vocab_size
    b, T = _BYTES[cfg.dtype], int(seq_len)
    names = resolve_names(cfg, hooks) if hooks else frozenset()
    cache = batch * sum(math.prod(_site_elems(cfg, n, T)) for n in names)
    layer = batch * (2 * H * T * T * 4 + 3 * H * T * E * b + 3 * T * M * b + 4 * T * D * b)
    logits = batch * T * V * b
    params = param_count(cfg) * _BYTES[cfg.param_dtype]
    return {"params": params, "cache": cache, "layer": layer, "logits": logits,
            "total": params + cache + max(layer, logits)}
