"""streamrank: real-time personalization (settings, CLI and demo orchestration)."""
