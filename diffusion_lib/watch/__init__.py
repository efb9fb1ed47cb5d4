"""Watching a study: its status table, TensorBoard streams, MLflow runs."""
