"""bex datasets: Arrow schema, partitioned writer, reader, relabelling, sampling, export (NPZ, RLlib view).

``Batch`` and ``TransitionSampler`` (torch) load on first use, so that commands which only read or check
datasets (and every bad-input path of the CLI) start without importing torch.
"""
from __future__ import annotations

from bex.core.lazy import lazy_getattr

from .export import export_npz
from .reader import DataFile, Dataset, StepArrays, Transitions, dataset_root_of, dataset_selection, transition_rows
from .relabel import process_pool_map, relabel, rewards_for_file
from .rllib_view import export_rllib, view_files
from .schema import SCHEMA_VERSION, Episode, format_param, step_schema
from .writer import DatasetWriter, atomic_write_bytes, check_output_root, partition_dir

_LAZY = {"Batch": ".batch", "TransitionSampler": ".sampler"}


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


__all__ = ["Batch", "export_npz", "DataFile", "Dataset", "StepArrays", "Transitions", "transition_rows",
           "dataset_root_of", "dataset_selection", "process_pool_map", "relabel", "rewards_for_file",
           "TransitionSampler", "SCHEMA_VERSION", "Episode", "format_param", "step_schema", "DatasetWriter",
           "atomic_write_bytes", "check_output_root", "partition_dir", "export_rllib", "view_files"]
