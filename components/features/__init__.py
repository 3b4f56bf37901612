"""Feature extractors, one module per feature set.

Every module offers ``extract(signal, sampling_rate, **params) -> np.ndarray`` on a mono,
natural-length float32 signal, and ``PARAMS`` (the keyword settings it reads). Scalar sets
(``handmade``, ``egemaps``) also offer ``feature_names(**params)``; sequence sets
(``logmel``, ``waveform``) document their array's shape and dtype. ``sets.extract_sets``
computes several sets of one clip sharing a single STFT; ``components.features.featurize`` maps them
over files and writes Parquet.
"""
