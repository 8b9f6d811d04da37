"""The HTTP edge: middleware, routes, dependencies, HTMX views, forms, security, error handlers, rendering, SSE."""
