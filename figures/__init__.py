"""algeval.figures: figures regenerated from saved results.

Empty so far: the figures issue adds one function per figure here, reading the
results that ``algeval prove``, ``algeval train`` and the analyses write.
"""
