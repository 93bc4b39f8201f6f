"""A minimal AI server laid out as a package (ASGI object: app.main:app)."""
