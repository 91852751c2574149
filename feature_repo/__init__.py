"""The Feast repository: store configurations, entities, feature views, push sources."""

from feature_repo.lean_import import defer_torch_import

defer_torch_import()  # before any module here imports Feast: a worker never needs torch
