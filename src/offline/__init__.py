"""Offline data: the HDF5 dataset format (format.py), its writer (writer.py) and reader (reader.py), the content
checks the reader applies (checks.py), importers of public datasets (importers.py) and the collection library
behind `run: collect` (collection.py).

Layer: above modules/controllers/runners and components/envs (it plays episodes with runners and behaviour
controllers and builds EpisodeBatches), below `run`. The names most code needs are here:

    from offline import DatasetError, DatasetWriter, OfflineDataset
"""
from offline.format import QUALITY_CODES, SCHEMA_VERSION, DatasetError, check_env
from offline.reader import OfflineDataset, load_salvage
from offline.writer import DatasetWriter, derive_truncated

__all__ = ["QUALITY_CODES", "SCHEMA_VERSION", "DatasetError", "DatasetWriter", "OfflineDataset", "check_env",
           "derive_truncated", "load_salvage"]
