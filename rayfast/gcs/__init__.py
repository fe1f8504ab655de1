"""GCS (global control store): Valkey/Redis shard servers, a pipelined hiredis client, the tables."""
from .client import GcsClient, ReplyError, parse_address, shard_for
from .pubsub import Subscriber
from .server import ShardInfo, find_server_binary, start_shards, stop_shards
from .tables import NODE_DEATH_CHANNEL, Gcs, object_channel

__all__ = [
    "Gcs", "GcsClient", "ReplyError", "Subscriber", "ShardInfo", "NODE_DEATH_CHANNEL",
    "find_server_binary", "object_channel", "parse_address", "shard_for", "start_shards", "stop_shards",
]
