"""A tanh MLP written in plain numpy, as a user would write it, with the arguments to try it on.

    jacobians compare examples/mlp.py:net --batched x             # inputs from example_inputs()
    jacobians compare examples/mlp.py:net --wrt x,W1 --batched x --plot mlp.png
    jacobians compare examples/mlp.py:net --batched x --shape x=32,784 --shape W1=256,784 \\
        --shape b1=256 --shape W2=10,256 --shape b2=10             # random float64 inputs (--seed)
    jacobians explain examples/mlp.py:net --batched x

``example_inputs()`` is found by the command line when ``--shape`` and
``--inputs`` leave an argument without a value.
"""

import numpy as np


def net(x, W1, b1, W2, b2):
    """Two layers: ``h = tanh(x W1^T + b1)``, ``out = h W2^T + b2``; x is (B, D)."""
    h = np.tanh(x @ W1.T + b1)
    return h @ W2.T + b2


def example_inputs(batch=8, d_in=20, d_hidden=32, d_out=5, seed=0):
    """A small batch: x (8, 20), W1 (32, 20), b1 (32,), W2 (5, 32), b2 (5,)."""
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(batch, d_in)),
            "W1": rng.normal(size=(d_hidden, d_in)) / np.sqrt(d_in), "b1": 0.1 * rng.normal(size=d_hidden),
            "W2": rng.normal(size=(d_out, d_hidden)) / np.sqrt(d_hidden), "b2": 0.1 * rng.normal(size=d_out)}
