"""Ray's module path of InputNode (ray.dag.input_node)."""
from rayfast.dag import InputAttributeNode, InputNode

__all__ = ["InputNode", "InputAttributeNode"]
