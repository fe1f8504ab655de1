"""Ray's small id objects for things rayfast names by bytes (ActorID, JobID, PlacementGroupID)."""


class BinaryID:
    """An id with Ray's methods: binary(), hex(); equal to ids of its own kind with the same bytes."""

    __slots__ = ("_b",)

    def __init__(self, b):
        self._b = b

    @classmethod
    def from_hex(cls, hex_id):
        return cls(bytes.fromhex(hex_id))

    def binary(self):
        return self._b

    def hex(self):
        return self._b.hex()

    def __eq__(self, other):
        return isinstance(other, type(self)) and other._b == self._b

    def __hash__(self):
        return hash(self._b)

    def __repr__(self):
        return f"{type(self).__name__}({self.hex()})"
