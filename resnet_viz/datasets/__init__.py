"""Real data sets from files the user has, and data sets uploaded in the app; nothing is downloaded.

- `base`: the error every reader raises, labelled uint8 images, and images to tensors (size, grey/RGB)
- `idx`: MNIST and Fashion-MNIST in their IDX format (raw or .gz)
- `cifar`: CIFAR-10's binary version; its pickled "python version" is refused unread
- `uploads`: a CSV of 2-D points and a zip of image folders, bounded and validated; content-hashed
- `registry`: where the files are, which are present, and uploaded data sets by content hash

`data.load_dataset` turns a `DataConfig` naming any of these into tensors.
"""

from .base import DatasetError

__all__ = ["DatasetError"]
