"""Tunable constants shared by every process of a node."""
import os

# Values whose serialized size is below this travel inline in messages and
# never touch the shared-memory store.
INLINE_THRESHOLD = int(os.environ.get("RAYFAST_INLINE_THRESHOLD", 100 * 1024))

# Default share of RAM (capped by /dev/shm) given to a node's object store.
OBJECT_STORE_MEMORY_FRACTION = 0.3

DEFAULT_MAX_RETRIES = 3
DEFAULT_GCS_SHARDS = 2

# A worker blocked in get() gives its CPU back; the pool may then grow past
# num_cpus, up to this many workers per CPU, so nested tasks never deadlock.
MAX_WORKERS_PER_CPU = 8

ALIGNMENT = 64
