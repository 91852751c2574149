"""The streaming side: event schema, producer SDK, the profile logic and the Faust worker."""
