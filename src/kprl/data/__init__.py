"""Frame datasets for keypoint learning: the on-disk format (`kprl.data.frames`) and `kprl collect`.

`kprl.data.collect` renders whole dm_control episodes (random or trained policy) into numbered, compressed,
pickle-free npz shards; `kprl.data.frames.load_dataset` reads and validates them into one `FrameDataset`.
"""

from kprl.data.frames import FrameDataset, load_dataset, validate_arrays, write_shard

__all__ = ["FrameDataset", "load_dataset", "validate_arrays", "write_shard"]
