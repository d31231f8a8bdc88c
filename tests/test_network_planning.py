"""Planning deep chains: the chain DP of ``network.optimal`` against brute force, 'dp' and both folds.

``optimal`` used to run opt_einsum's 'dp' over the whole network; a per-sample batch label joins
every operand, so its search grew exponentially with depth (20 tanh layers: ~24 s to plan).  It now
takes the cheapest of both folds, a matrix-chain DP over the network's links, and 'dp' only for
networks of at most ``DP_MAX_TERMS`` operands.  These tests pin what that must keep: the DP is the
exact optimum over bracketings of the links (checked by enumerating them all, costed by
opt_einsum), it agrees with 'dp' where 'dp' is still affordable, and no plan costs more than a fold.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import opt_einsum as oe
import pytest

import jacobians as jac
from jacobians import fn, network
from jacobians.network import Network, _cost, _tree_to_path


def tanh_mlp(layers: int, width: int = 16, batch: int = 8, seed: int = 0):
    r = np.random.default_rng(seed)
    Ws = [r.normal(size=(width, width)) / np.sqrt(width) for _ in range(layers)]
    bs = [r.normal(size=width) for _ in range(layers)]

    def mlp(x):
        h = x
        for W, b in zip(Ws, bs):
            h = fn.tanh(fn.linear(h, W, b))
        return h
    return mlp, r.normal(size=(batch, width))


# ---------------------------------------------------------------- brute force over bracketings

def _interval_trees(leaves: tuple):
    """Every full binary tree over ``leaves`` kept in order (the bracketings of a chain)."""
    if len(leaves) == 1:
        yield leaves[0]
        return
    for s in range(1, len(leaves)):
        for a in _interval_trees(leaves[:s]):
            for b in _interval_trees(leaves[s:]):
                yield (a, b)


def _set_trees(items: tuple):
    """Every full binary tree over the set ``items`` (any pairing order)."""
    if len(items) == 1:
        yield items[0]
        return
    first, rest = items[0], items[1:]
    for k in range(len(rest)):  # the subtree holding ``first`` takes a subset of the rest
        for others in itertools.combinations(rest, k):
            remaining = tuple(x for x in rest if x not in others)
            for a in _set_trees((first,) + others):
                for b in _set_trees(remaining):
                    yield (a, b)


def brute_force(net: Network) -> int:
    """The fewest FLOPs over every bracketing of the links, every order inside each link."""
    groups = [tuple(p) for p, *_ in net.links if p]
    used = {p for g in groups for p in g}
    rest = [p for p in range(len(net.terms)) if p not in used]
    best = None
    for inner in itertools.product(*(list(_set_trees(g)) for g in groups)):
        for root in _interval_trees(tuple(inner)):
            for p in rest:
                root = (root, p)
            flops = _cost(net, _tree_to_path(root, len(net.terms))).flops
            best = flops if best is None else min(best, flops)
    return best


def random_chain(seed: int) -> Network:
    """A chain of 2-6 links between boundary labels, as the composer builds them: a link is a
    matrix, a slope vector (a delta merged its labels) or a matrix with a vector beside it; a
    batch label rides on some operands (or on none: a ones-factor); now and then a label only one operand carries."""
    r = np.random.default_rng(seed)
    n = int(r.integers(2, 7))
    labels = iter(oe.get_symbol(k) for k in range(1, 100))  # batch "a" apart
    batch = "a" if r.random() < 0.7 else ""
    sizes = {"a": int(r.integers(1, 6))}
    carry = 0.6 if r.random() < 0.8 else 0.0  # else the batch is a broadcast: a ones-factor
    bounds = [next(labels)]
    terms, links = [], []
    for _ in range(n):
        kind = r.choice(["matrix", "slope", "pair"])
        top = bounds[-1]
        bottom = top if kind == "slope" else next(labels)
        bounds.append(bottom)
        first = len(terms)
        ops = [top + bottom if kind != "slope" else top]
        if kind == "pair":
            ops.append(r.choice([top, bottom]))
        if r.random() < 0.15:
            private = next(labels)
            sizes[private] = int(r.integers(1, 4))
            ops[0] += private
        terms += [(batch if r.random() < carry else "") + t for t in ops]
        links.append((tuple(range(first, len(terms))), (top,), (bottom,)))
    for l in bounds:
        sizes.setdefault(l, int(r.integers(1, 7)))
    output = "".join(dict.fromkeys(batch + bounds[0] + bounds[-1]))
    carried = set("".join(terms))
    extra = [l for l in output if l not in carried]  # a ones-factor, as the composer adds
    terms += extra
    return Network(tuple(terms), tuple(tuple(sizes[l] for l in t) for t in terms), output,
                   len(terms) - len(extra), tuple(links))


@pytest.mark.parametrize("seed", range(40))
def test_the_chain_dp_is_the_exact_optimum_over_bracketings(seed):
    net = random_chain(seed)
    path = network.chain(net)
    assert _cost(net, path).flops == brute_force(net), net.eq


def test_the_chain_dp_on_a_worked_chain():
    # W1 (2x3), W2 (3x50), W3 (50x4), output end first; the classic answer W1 (W2 W3):
    # W2 W3 is 2*3*50*4 = 1200, then W1 (W2 W3) is 2*2*3*4 = 48; the folds cost 2*2*3*50 + 2*2*50*4 = 1400
    # and 1200 + 48 as well (the forward fold *is* W1 (W2 W3)), so take a chain where neither fold wins:
    # W1 (2x30), W2 (30x1), W3 (1x30), W4 (30x2): (W1 W2)(W3 W4) = 2*2*30*1 + 2*1*30*2 + 2*2*1*2 = 248
    net = Network(("ab", "bc", "cd", "de"), ((2, 30), (30, 1), (1, 30), (30, 2)), "ae", 4,
                  tuple(((k,), (), ()) for k in range(4)))
    fold = min(_cost(net, network.reverse(net)).flops, _cost(net, network.forward(net)).flops)
    assert fold == 2 * 2 * 30 * 1 + 2 * 2 * 1 * 30 + 2 * 2 * 30 * 2 == 480
    assert _cost(net, network.chain(net)).flops == 248
    assert _cost(net, network.optimal(net)).flops == 248


@pytest.mark.parametrize("seed", range(12))
def test_optimal_agrees_with_dp_where_dp_is_affordable(seed):
    net = random_chain(seed)
    dp = _cost(net, network._dp_path(net.eq, net.shapes)).flops
    folds = [_cost(net, network.forward(net)).flops, _cost(net, network.reverse(net)).flops]
    assert _cost(net, network.optimal(net)).flops == min([dp, brute_force(net)] + folds)


def test_six_tanh_layers_plan_at_the_dp_optimum():
    mlp, x = tanh_mlp(6)
    plans = {o: jac.jacobian(mlp, wrt="x", batched="x", order=o).plan(x) for o in ("optimal", "forward", "reverse")}
    (step,) = plans["optimal"].networks
    net = step.network
    assert len(net.terms) == 12  # six slopes and six weights: 'dp' still runs at this size
    dp = _cost(net, network._dp_path(net.eq, net.shapes)).flops
    chain = _cost(net, network.chain(net)).flops
    assert step.cost.flops == dp == chain == brute_force(net)
    assert plans["optimal"].flops <= min(plans["forward"].flops, plans["reverse"].flops)


def test_forty_tanh_layers_plan_no_worse_than_either_fold_and_agree():
    mlp, x = tanh_mlp(40)
    fns = {o: jac.jacobian(mlp, wrt="x", batched="x", order=o) for o in ("optimal", "forward", "reverse")}
    plans = {o: f.plan(x) for o, f in fns.items()}
    (step,) = plans["optimal"].networks
    assert len(step.network.terms) == 80 > network.DP_MAX_TERMS  # 'dp' is not run: the chain DP plans it
    assert step.cost.flops == _cost(step.network, network.chain(step.network)).flops
    assert plans["optimal"].flops <= min(plans["forward"].flops, plans["reverse"].flops)
    J = fns["optimal"](x)
    np.testing.assert_allclose(J, fns["reverse"](x), rtol=1e-10, atol=1e-14)


def test_a_long_network_without_links_is_planned_as_a_chain_of_its_operands():
    # 30 matrices with a shared batch label and no link records: 'dp' is skipped, the chain DP runs
    r = np.random.default_rng(3)
    bounds = [oe.get_symbol(k) for k in range(1, 32)]  # batch "a" apart
    terms = tuple("a" + bounds[k] + bounds[k + 1] for k in range(30))
    sizes = {"a": 4, **{l: int(r.integers(1, 9)) for l in bounds}}
    net = Network(terms, tuple(tuple(sizes[l] for l in t) for t in terms), "a" + bounds[0] + bounds[-1])
    path = network.optimal(net)
    flops = _cost(net, path).flops
    assert flops <= min(_cost(net, network.forward(net)).flops, _cost(net, network.reverse(net)).flops)
    assert flops == _cost(net, network.chain(net)).flops
    arrays = [r.normal(size=s) for s in net.shapes]
    np.testing.assert_allclose(net.contract(arrays, path), oe.contract(net.eq, *arrays), rtol=1e-9)


def test_a_fold_deeper_than_the_recursion_limit_becomes_a_path():
    n = 3000
    root = 0
    for p in range(1, n):
        root = (root, p)
    path = _tree_to_path(root, n)
    assert path == network._fold(list(range(n)))  # the reverse fold, written out by _fold
    assert path[:3] == ((0, 1), (0, 2998), (0, 2997))
