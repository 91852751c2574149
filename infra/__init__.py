"""Launchers for the embedded stack (Tansu broker) and process/broker plumbing."""
