"""jacobians: full, explicit Jacobian tensors built with einsum."""

from . import ops
from .factored import Factored
from .limits import JacobianTooLarge, memory_limit, set_memory_limit

__version__ = "0.1.0"
__all__ = ["ops", "Factored", "JacobianTooLarge", "memory_limit", "set_memory_limit"]
