"""Hypothesis strategies shared by the theory tests."""

from hypothesis import strategies as st

from algeval.theory.graph import from_edges


@st.composite
def graphs_with_start(draw, min_n=1, max_n=9, edge_factor=3):
    """``(adj, directed, start)``: a random graph, self-loops allowed.

    Half the draws contain a random tree directed away from ``start`` (so
    every vertex is reachable), plus up to ``edge_factor * n`` random edges.
    """
    n = draw(st.integers(min_n, max_n))
    directed = draw(st.booleans())
    vertex = st.integers(0, n - 1)
    edges = draw(st.lists(st.tuples(vertex, vertex), max_size=edge_factor * n))
    if draw(st.booleans()):
        label = draw(st.permutations(range(n)))
        edges += [(label[draw(st.integers(0, i - 1))], label[i]) for i in range(1, n)]
        start = label[0]
    else:
        start = draw(vertex)
    return from_edges(n, edges, directed=directed), directed, start
