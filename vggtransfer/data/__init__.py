"""Layer 3, the data: image decoding and the one preprocessing path (:mod:`~vggtransfer.data.images`), labelled data
sets and splits, the HDF5 feature store, and the image URL downloader (:mod:`vggtransfer.data.download`).
"""
