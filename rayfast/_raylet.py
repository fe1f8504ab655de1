"""The names of Ray's private `ray._raylet` module that Ray's own docs import from it
(`from ray._raylet import ObjectRefGenerator` in the streaming generator guide): the same classes
as rayfast's public ones."""
from rayfast._core.ids import ObjectID, ObjectRef, TaskID
from rayfast.actor import ActorID
from rayfast.generator import DynamicObjectRefGenerator, ObjectRefGenerator
from rayfast.runtime_context import JobID, NodeID
from rayfast.util.placement_group import PlacementGroupID

StreamingObjectRefGenerator = ObjectRefGenerator   # its older name, kept by Ray

__all__ = ["ObjectID", "ObjectRef", "TaskID", "ActorID", "JobID", "NodeID", "PlacementGroupID",
           "ObjectRefGenerator", "DynamicObjectRefGenerator", "StreamingObjectRefGenerator"]
