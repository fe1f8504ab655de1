"""`rayfast.util.multiprocessing`: the standard library's `multiprocessing.Pool` API on actors
(Ray's `ray.util.multiprocessing`)."""
from multiprocessing import TimeoutError

from rayfast.util.multiprocessing.pool import AsyncResult, IMapIterator, Pool

__all__ = ["Pool", "AsyncResult", "IMapIterator", "TimeoutError"]
