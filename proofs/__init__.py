"""algeval.proofs: existence claims, checked exhaustively or on large samples, written as certificates.

- :mod:`algeval.proofs.claims`        claims for the compiled library programs (resources as sympy in T, V)
- :mod:`algeval.proofs.certify`       the check against the interpreter, and atomic JSON certificates
- :mod:`algeval.proofs.search_claims` claims and checks for the graph-search constructions (in n, D, T)
- ``proofs/certificates/``            the committed certificates (``algeval prove --all``)
"""
