"""The Alembic scripts; a wheel carries them as `trainyard.migrations` (see setup.py)."""
