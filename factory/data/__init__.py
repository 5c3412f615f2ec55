"""Stream a store into PyTorch: :class:`PairDataset` (LR/HR pairs, restoration) and :class:`FrameDataset`
(SMLM frames with KDE targets, localization), both split by whole shards over DDP ranks and DataLoader
workers, shuffled per epoch, every sample checked against its manifest checksum (:mod:`factory.data.sharded`)."""
from factory.data.frames import FrameConfig, FrameDataset, FrameNormalization, make_frame_loader
from factory.data.pairs import DataConfig, PairDataset, make_loader, upsample
from factory.data.sharded import distributed_rank, shuffle_buffer
from factory.normalize import CAMERA_FIELDS, Normalization, Upsample, normalize

__all__ = ["CAMERA_FIELDS", "DataConfig", "FrameConfig", "FrameDataset", "FrameNormalization", "Normalization",
           "PairDataset", "Upsample", "distributed_rank", "make_frame_loader", "make_loader", "normalize",
           "shuffle_buffer", "upsample"]
