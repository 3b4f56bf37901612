"""Where the pipeline's stages read and write, relative to the project root.

dvc.yaml names the same paths; every stage runs with the project root as its working folder.
"""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")  # DVC output of ingest; immutable input of everything after
DOWNLOAD_DIR = Path("data/downloads")  # resumable Zenodo downloads (not versioned)
INGEST_STATE_FILE = Path("data/.ingest-state.json")  # fingerprint of the last ingested source
METADATA_DIR = Path("data/metadata")
CLIPS_TABLE = METADATA_DIR / "clips.parquet"
REJECTED_TABLE = METADATA_DIR / "rejected.csv"
FEATURES_DIR = Path("data/features")
METRICS_DIR = Path("metrics")
VALIDATION_DOCS_DIR = Path("reports/validation")
PLOTS_DIR = Path("plots")
