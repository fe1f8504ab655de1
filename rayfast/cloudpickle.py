"""`rayfast.cloudpickle`, Ray's `ray.cloudpickle`: cloudpickle, except that an ObjectRef pickled
with it is serialized out of band, as Ray's page on that anti-pattern describes. Reference counting
cannot follow a ref into such bytes, so the process pins its object for the rest of its session
(the object outlives every ref; Ray pins it for the worker's life), or, with
RAY_allow_out_of_band_object_ref_serialization=0 (read at each dump: a task's runtime_env may set
it), refuses with OufOfBandObjectRefSerializationException to show where it happens. (`pickle`
itself pins nothing: its ref's object may be gone when the bytes are read, as in Ray.)"""
import io
import os
import pickle

import cloudpickle as _cloudpickle
from cloudpickle import (DEFAULT_PROTOCOL, __version__, list_registry_pickle_by_value,  # noqa: F401
                         register_pickle_by_value, unregister_pickle_by_value)

from rayfast._core.ids import ObjectRef
from rayfast.exceptions import OufOfBandObjectRefSerializationException
from rayfast.serialization import pin_out_of_band

ALLOW_ENV = "RAY_allow_out_of_band_object_ref_serialization"


class CloudPickler(_cloudpickle.CloudPickler):
    def reducer_override(self, obj):
        if isinstance(obj, ObjectRef):
            if os.environ.get(ALLOW_ENV, "1").lower() not in ("1", "true"):
                raise OufOfBandObjectRefSerializationException(
                    f"It is not allowed to serialize ObjectRef {obj.hex()}. If you want to allow "
                    f"serialization, set `{ALLOW_ENV}=1`. If you set the env var, the object is pinned "
                    f"for the lifetime of the process and can cause object leaks.")
            pin_out_of_band(obj)
            return obj.__reduce__()
        return super().reducer_override(obj)


Pickler = CloudPickler
loads = pickle.loads
load = pickle.load


def dump(obj, file, protocol=None, buffer_callback=None):
    CloudPickler(file, protocol=protocol, buffer_callback=buffer_callback).dump(obj)


def dumps(obj, protocol=None, buffer_callback=None):
    with io.BytesIO() as file:
        dump(obj, file, protocol, buffer_callback)
        return file.getvalue()
