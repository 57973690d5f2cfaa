"""Data: official CIFAR archives, image folders, device-resident batches and augmentation."""

from resnetlab.data.augment import Normalizer, random_crop_flip
from resnetlab.data.loader import Batches, ImageSet, TensorBatches

__all__ = ["Batches", "ImageSet", "Normalizer", "TensorBatches", "random_crop_flip"]
