"""Datasets (registry, loaders, users' own data), forget requests and batch draws."""

from conun.data.arrays import ArrayDataset, DatasetBundle
from conun.data.augment import augment_batch, default_pad
from conun.data.custom import from_image_folder, from_tensors
from conun.data.errors import DatasetNotFoundError, UnknownDatasetError
from conun.data.registry import (
    DATASETS,
    DatasetInfo,
    available_datasets,
    check_dataset_available,
    dataset_info,
    load_dataset,
    register_dataset,
)
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, read_ids_file
from conun.data.validation import ValidationSplit, split_validation

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DatasetBundle",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ForgetRequestError",
    "ForgetRetainSplit",
    "UnknownDatasetError",
    "ValidationSplit",
    "augment_batch",
    "available_datasets",
    "check_dataset_available",
    "dataset_info",
    "default_pad",
    "from_image_folder",
    "from_tensors",
    "load_dataset",
    "read_ids_file",
    "register_dataset",
    "split_validation",
]
