"""The PyTorch reference for ``algeval bench train``: the same model, optimiser and loss in torch eager.

The model is the :class:`~algeval.models.Transformer` of a benchmark shape,
written as a PyTorch user would write it (fused ``Q K V`` projection,
``F.scaled_dot_product_attention``)::

    x = W_E[tokens] + W_pos[:T]
    per block:  x = x + W_O attn(LN1(x));   x = x + W_out gelu(W_in LN2(x) + b_in) + b_out
    logits = LN_f(x) W_U + b_U

with pre-LayerNorm, exact (erf) GELU, biases everywhere, an untied unembedding
and the workbench's attention mask (causal, pad keys masked, a position always
sees itself).  The loss is ``answer_set_nll``: the mean over scored positions of
``-log sum_{a in answers} softmax(logits)[a]``.  The optimiser is
:func:`algeval.sim.train.make_optimizer`'s, in torch: global-norm clipping,
then AdamW (``b1=0.9, b2=0.999, eps=1e-8``, decay on parameters with 2 or more
axes) on the same warm-up + cosine learning rate.  One difference: the key bias
``b_K`` (zero gradient in exact arithmetic; frozen by the JAX optimiser) is part
of the fused projection here and gets Adam updates of its rounding noise.

torch is optional (the ``llm`` extra); :func:`torch_available` says whether it
imports.
"""

from __future__ import annotations

import numpy as np

__all__ = ["torch_available", "TorchStep"]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d, h, e, m):
            super().__init__()
            self.h, self.e = h, e
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-5), nn.LayerNorm(d, eps=1e-5)
            self.qkv = nn.Linear(d, 3 * h * e)
            self.out = nn.Linear(h * e, d)
            self.fc_in, self.fc_out = nn.Linear(d, m), nn.Linear(m, d)

        def forward(self, x, mask):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.h, self.e).permute(2, 0, 3, 1, 4)
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + self.out(z.transpose(1, 2).reshape(b, t, self.h * self.e))
            return x + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))

    class Model(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.W_E = nn.Embedding(s.vocab, s.d_model)
            self.W_pos = nn.Parameter(torch.randn(s.seq, s.d_model) * 0.02)
            self.blocks = nn.ModuleList([Block(s.d_model, s.n_heads, s.d_head, s.d_mlp)
                                         for _ in range(s.n_layers)])
            self.ln_f = nn.LayerNorm(s.d_model, eps=1e-5)
            self.W_U = nn.Linear(s.d_model, s.vocab)

        def forward(self, tokens):
            t = tokens.shape[1]
            i = torch.arange(t)
            mask = (i[None, :] <= i[:, None])[None] & (tokens != 0)[:, None, :]
            mask = (mask | torch.eye(t, dtype=torch.bool)[None])[:, None]  # (b, 1, q, k)
            x = self.W_E(tokens) + self.W_pos[:t]
            for blk in self.blocks:
                x = blk(x, mask)
            return self.W_U(self.ln_f(x))

    def answer_set_nll(logits, answers, loss_mask):
        logp = torch.log_softmax(logits.float(), -1)
        valid = answers >= 0
        picked = torch.gather(logp, -1, answers.clamp(min=0)).masked_fill(~valid, -torch.inf)
        nll = -torch.logsumexp(picked, -1).masked_fill(~loss_mask, 0.0)
        return nll.sum() / loss_mask.sum().clamp(min=1)

    return Model, answer_set_nll


class TorchStep:
    """One torch training step of a benchmark shape on a fixed batch; :meth:`run` times ``n`` of them.

    ``batch``: numpy ``tokens (B, T)``, ``answers (B, T, K)``, ``loss_mask (B, T)``;
    ``lrs``: the learning rate of every update (the JAX schedule, precomputed).
    """

    def __init__(self, shape, batch: dict, lrs: np.ndarray, *, weight_decay: float, grad_clip: float,
                 seed: int = 0, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        Model, self._loss = _modules()
        torch.manual_seed(seed)
        self.model = Model(shape)
        decay = [p for p in self.model.parameters() if p.ndim >= 2]
        rest = [p for p in self.model.parameters() if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                      {"params": rest, "weight_decay": 0.0}],
                                     lr=float(lrs[0]), betas=(0.9, 0.999), eps=1e-8)
        self.lrs, self.clip, self.i = np.asarray(lrs, np.float64), float(grad_clip), 0
        self.tokens = torch.as_tensor(np.asarray(batch["tokens"]), dtype=torch.long)
        self.answers = torch.as_tensor(np.asarray(batch["answers"]), dtype=torch.long)
        self.loss_mask = torch.as_tensor(np.asarray(batch["loss_mask"]), dtype=torch.bool)

    def step(self) -> "object":
        import torch

        for g in self.opt.param_groups:
            g["lr"] = float(self.lrs[min(self.i, len(self.lrs) - 1)])
        self.opt.zero_grad(set_to_none=True)
        loss = self._loss(self.model(self.tokens), self.answers, self.loss_mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.i += 1
        return loss

    def run(self, n: int) -> float:
        """Run ``n`` steps; returns the last loss (reading it waits for the work: eager torch is synchronous)."""
        loss = None
        for _ in range(n):
            loss = self.step()
        return float(loss.detach())

    def num_params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))
