"""The streaming side: event schema, producer SDK, the profile logic and the Faust worker."""

from feature_repo.lean_import import defer_torch_import

defer_torch_import()  # before any module here imports Feast: a worker never needs torch
