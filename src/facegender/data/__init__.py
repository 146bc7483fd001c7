"""Data readers: UTKFace file names, class folders and CSV manifests, with bad items reported."""

from facegender.data.discover import read_data
from facegender.data.samples import DataSet, Sample, Skipped

__all__ = ["DataSet", "Sample", "Skipped", "read_data"]
