"""The Feast repository: store configurations, entities, feature views, push sources."""
