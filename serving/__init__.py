"""The Ray Serve application: API models, candidates, scorer, ranking rules."""
