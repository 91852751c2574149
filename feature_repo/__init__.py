"""The Feast repository: store configurations, entities, feature views, push sources."""

from infra.private_apis import defer_feast_torch_import

defer_feast_torch_import()  # before any module here imports Feast: a worker never needs torch
