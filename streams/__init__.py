"""The streaming side: event schema, producer SDK, the profile logic and the Faust worker."""

from infra.private_apis import defer_feast_torch_import

defer_feast_torch_import()  # before any module here imports Feast: a worker never needs torch
