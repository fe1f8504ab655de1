"""`rayfast.util.as_completed` and `rayfast.util.map_unordered` (Ray's ray.util helpers): results
as their tasks finish, in batches of `chunk_size` ready refs per `wait()`, instead of `get()` in a
loop in submission order."""
from __future__ import annotations

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def _check(chunk_size, wait_kwargs):
    if chunk_size < 1:
        raise ValueError("`chunk_size` must be >= 1")
    if "num_returns" in wait_kwargs:
        raise ValueError("Use the `chunk_size` argument instead of `num_returns`.")


def _next_batch(refs, chunk_size, yield_obj_refs, wait_kwargs):
    """(ready values, or their refs if yield_obj_refs; the refs still pending)."""
    import rayfast
    ready, rest = rayfast.wait(refs, num_returns=min(chunk_size, len(refs)), **wait_kwargs)
    return (ready if yield_obj_refs else rayfast.get(ready)), rest


def as_completed(refs, *, chunk_size=DEFAULT_CHUNK_SIZE, yield_obj_refs=False, **kwargs):
    """Yield the values of refs (or the refs, yield_obj_refs=True) as they become ready, a batch of
    up to chunk_size at a time; kwargs (timeout, fetch_local) go to wait()."""
    _check(chunk_size, kwargs)
    refs = list(refs)
    while refs:
        done, refs = _next_batch(refs, chunk_size, yield_obj_refs, kwargs)
        yield from done


def map_unordered(fn, items, *, backpressure_size=DEFAULT_BACKPRESSURE_SIZE, chunk_size=DEFAULT_CHUNK_SIZE,
                  yield_obj_refs=False, **kwargs):
    """fn.remote(item) for each item, yielding results as they finish; at most backpressure_size
    tasks are in flight (None: no limit) while items remain."""
    if backpressure_size is not None and backpressure_size <= 0:
        raise ValueError("backpressure_size must be positive.")
    _check(chunk_size, kwargs)
    refs = []
    for item in items:
        refs.append(fn.remote(item))
        if backpressure_size is not None and len(refs) >= backpressure_size:
            done, refs = _next_batch(refs, chunk_size, yield_obj_refs, kwargs)
            yield from done
    yield from as_completed(refs, chunk_size=chunk_size, yield_obj_refs=yield_obj_refs, **kwargs)
