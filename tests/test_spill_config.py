"""Where spilled objects go, what is removed at the end, and turning spilling off."""
import os

import numpy as np
import pytest

import rayfast
from rayfast.exceptions import ObjectStoreFullError

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


def test_spilling_off_gives_store_full_error_and_recovers():
    rayfast.init(num_cpus=1, object_store_memory=100 << 20,
                 _system_config={"automatic_object_spilling_enabled": False})
    try:
        held = []
        with pytest.raises(ObjectStoreFullError) as info:
            for _ in range(6):
                held.append(rayfast.put(np.ones(MB30)))
        assert "capacity" in str(info.value)
        del held
        assert rayfast.get(rayfast.put(np.ones(MB30))).sum() == MB30   # space came back
    finally:
        rayfast.shutdown()
