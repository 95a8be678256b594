"""k-hop induction heads (Sanford, Hsu & Telgarsky, ICML 2024).

"Transformers, Parallel Computation, and Logarithmic Depth" defines, for a
sequence ``X = X_1 ... X_N`` (1-indexed, ``0`` meaning "undefined"),

    find^1_X(i) = max( {0} ∪ { j <= i : X_{j-1} = X_i } )
    find^k_X(i) = find^1_X( find^{k-1}_X(i) )
    hop_k(X)_i  = X_{find^k_X(i)}  if find^k_X(i) != 0, else ⊥.

One hop is an induction head: find the most recent *earlier* occurrence of
the current token (position ``j - 1 < i``) and move to the position right
after it; ``k`` hops chain this ``k`` times, and the paper shows depth
``O(log k)`` suffices for a transformer.

This module is 0-indexed (positions ``0..N-1``) and writes ``-1`` for
undefined (⊥), so the same definition reads

    find_1(i) = max{ j : 1 <= j <= i, X[j-1] = X[i] }      (-1 if the set is empty)
    find_k(i) = find_1(find_{k-1}(i)),  find_0(i) = i,  find_k(-1) = -1
    hop_k(X)[i] = X[find_k(i)]  or -1 when find_k(i) = -1.

Note ``j = i`` is allowed (when ``X[i-1] = X[i]``), a fixed point of find_1.
"""

from __future__ import annotations

import numpy as np

from algeval.errors import ParameterError, check_int_range
from algeval.theory.trace import Trace


def khop(seq, k) -> Trace:
    """Run ``k`` hops on every position of ``seq`` at once.

    ``seq`` is a 1-D sequence of non-negative integer tokens (``-1`` is the
    "undefined" code).  Variables: ``find: (step, position)`` int, step
    ``s = 0..k`` holding ``find_s`` (``find_0`` is the identity).
    ``answer``: ``hop_k`` at every position, an int64 array.
    """
    x = np.asarray(seq)
    if x.ndim != 1 or x.size == 0:
        raise ParameterError("seq.shape", x.shape, "must be 1-D and non-empty")
    if not np.issubdtype(x.dtype, np.integer) or (x < 0).any():
        raise ParameterError("seq", x.tolist(), "must hold non-negative integer tokens")
    k = check_int_range("k", k, lo=1)
    x = x.astype(np.int64)

    # find_1 in one left-to-right pass: last[t] = the latest position holding token t so far
    find1 = np.full(x.size, -1, dtype=np.int64)
    last: dict[int, int] = {}
    for i, t in enumerate(x.tolist()):
        if t in last:
            find1[i] = last[t] + 1
        last[t] = i

    finds = [np.arange(x.size, dtype=np.int64)]
    for _ in range(k):
        prev = finds[-1]
        finds.append(np.where(prev >= 0, find1[np.maximum(prev, 0)], -1))
    find = np.stack(finds)
    answer = np.where(find[-1] >= 0, x[np.maximum(find[-1], 0)], -1)
    return Trace(
        algorithm="k-hop-induction",
        answer=answer,
        variables={"find": find},
        axes={"find": ("step", "position")},
    )
