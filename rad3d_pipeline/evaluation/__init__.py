"""Evaluation: model adapters, predictions, metric protocols, text and clinical metrics, leaderboard."""
