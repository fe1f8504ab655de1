"""The node manager's side of the GCS: what it records there, never waited for on the task path."""
import os
import pickle

from rayfast.gcs.tables import Gcs


class NodeGcs:
    def __init__(self, addresses):
        self.gcs = Gcs(addresses)
        self.addresses = list(addresses)

    def export_function_async(self, function_id, pickled):
        self.gcs.client.write_async(self.gcs._shard(function_id), "SET", b"fn:" + function_id, pickled, "NX")

    def put_task_async(self, task_id, spec):
        self.gcs.put_task_async(task_id, pickle.dumps(spec, 5))

    def add_events_async(self, node_id, events):
        self.gcs.add_events_async(
            [{"name": name, "task_id": tid.hex(), "worker": wid, "pid": pid, "start": start, "end": end,
              "node": node_id.hex()} for name, tid, wid, pid, start, end in events],
            node_id=node_id)

    def register_node(self, node_id, info):
        self.gcs.register_node(node_id, info)

    def flush_pending(self):
        self.gcs.flush(wait=False)

    def fds(self):
        out = []
        for sh in self.gcs.client._shards:
            sock = getattr(sh.conn, "sock", None)
            if sock is not None:
                out.append(sock.fileno())
        return out

    def statistics(self):
        return self.gcs.statistics()

    def close(self):
        try:
            self.gcs.close()
        except Exception:
            pass
