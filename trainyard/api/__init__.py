"""The HTTP API: `create_app(settings)` and thin routes over the platform."""
