"""bex datasets: Arrow schema, partitioned writer, reader, relabelling, sampling, export (NPZ, RLlib view)."""
from .batch import Batch
from .export import export_npz
from .reader import DataFile, Dataset, StepArrays, Transitions, transition_rows
from .relabel import process_pool_map, relabel, rewards_for_file
from .rllib_view import export_rllib, view_files
from .sampler import TransitionSampler
from .schema import SCHEMA_VERSION, Episode, format_param, step_schema
from .writer import DatasetWriter, atomic_write_bytes, check_output_root, partition_dir

__all__ = ["Batch", "export_npz", "DataFile", "Dataset", "StepArrays", "Transitions", "transition_rows",
           "process_pool_map", "relabel", "rewards_for_file", "TransitionSampler", "SCHEMA_VERSION", "Episode",
           "format_param",
           "step_schema", "DatasetWriter", "atomic_write_bytes", "check_output_root", "partition_dir", "export_rllib",
           "view_files"]
