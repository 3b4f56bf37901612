"""MLflow tracking: runs, logged evaluations, data and code versions."""
