"""The Feast repository: store configurations, entities, feature views, push sources."""

from infra.private_apis import prepare_feast_import

# before any module here imports Feast: a worker never needs torch, nor Feast's run-time
# type instrumentation (two seconds of every process start that imports it)
prepare_feast_import()
