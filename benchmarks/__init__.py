"""Benchmarks: the toolkit against hand-written numpy closed forms and against JAX / PyTorch.

* :mod:`benchmarks.problems` — the problems: inputs (fixed seeds), the traced
  function, the numpy closed form of the same Jacobian, and the peers' model;
* :mod:`benchmarks.peers` — JAX and PyTorch implementations, imported lazily
  (a missing framework skips its rows with a note);
* :mod:`benchmarks.run` — the harness (``python -m benchmarks.run --help``).
"""
