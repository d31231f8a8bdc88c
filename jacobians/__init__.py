"""jacobians: full, explicit Jacobian tensors built with einsum."""

from . import ops
from .plan import Plan
from .transforms import jacobian, JacobianFunction, hessian, jvp, vjp, hvp
from .graph import fn
from .comparison import compare, compare_hessian, Report
from .explain import explain
from .factored import Factored
from .limits import JacobianTooLarge, memory_limit, set_memory_limit
from .ntk import ntk, sample_grad_norms, chunked_ntk
from .chunked import chunked_jacobian

__version__ = "0.1.0"
__all__ = ["ops", "fn", "jacobian", "hessian", "jvp", "vjp", "hvp", "compare", "compare_hessian", "Report", "explain",
           "JacobianFunction", "Plan", "Factored", "JacobianTooLarge", "memory_limit", "set_memory_limit", "ntk",
           "sample_grad_norms", "chunked_jacobian", "chunked_ntk"]
