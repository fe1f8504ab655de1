"""Where spilled objects go, what is removed at the end, and turning spilling off."""
import os

import numpy as np

import rayfast
from rayfast import core_worker

MB30 = (30 << 20) // 8


def test_user_spill_directory_keeps_its_files(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    rayfast.init(num_cpus=1, object_store_memory=100 << 20, object_spilling_directory=str(tmp_path))
    try:
        refs = [rayfast.put(np.full(MB30, i, dtype=np.float64)) for i in range(6)]   # 180 MB in 100
        assert [float(rayfast.get(r)[0]) for r in refs] == [0, 1, 2, 3, 4, 5]
        ours = [p for p in os.listdir(tmp_path) if p != "keep.txt"]
        assert len(ours) == 1 and os.listdir(tmp_path / ours[0])   # spilled into our own subdirectory
    finally:
        rayfast.shutdown()
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_spilling_off_puts_beyond_the_store_go_to_files():
    """Without spilling, what finds the store full of objects in use goes to a file of its own
    (Ray's fallback allocation: Ray 2.60's puts succeed here too), not ObjectStoreFullError."""
    rayfast.init(num_cpus=1, object_store_memory=100 << 20,
                 _system_config={"automatic_object_spilling_enabled": False})
    try:
        held = [rayfast.put(np.full(MB30, float(i))) for i in range(6)]   # 180 MB in 100
        assert [float(rayfast.get(r)[-1]) for r in held] == [0, 1, 2, 3, 4, 5]
        store = core_worker.current().request("statistics")["store"]
        assert store["num_fallback"] >= 3 and store["spills"] == 0, store
        del held
        assert rayfast.get(rayfast.put(np.ones(MB30))).sum() == MB30   # the store's own space is back
    finally:
        rayfast.shutdown()
