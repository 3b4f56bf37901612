"""The MLflow model registry: model I/O, publishing, promotion to champion, rollback."""
