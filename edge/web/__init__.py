"""The browser viewer served at ``/`` by the HTTP transport (static files, no build step)."""
