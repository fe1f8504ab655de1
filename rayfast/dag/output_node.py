"""Ray's module path of MultiOutputNode (ray.dag.output_node)."""
from rayfast.dag import MultiOutputNode

__all__ = ["MultiOutputNode"]
