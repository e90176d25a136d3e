"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# Each request runs in a thread of its own (Django's ThreadSensitiveContext), so a connection is
# never kept by Django but taken from a pool and given back at the request's end: see
# DB_CONN_MAX_AGE and DB_POOL_SIZE in orchestrator/settings.py.
os.environ.setdefault("STEWARD_DB_CONN_MAX_AGE", "0")
os.environ.setdefault("STEWARD_DB_POOL", "20")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.conf import settings
from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the apps loaded)
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from governance.consumers import LiveConsumer  # noqa: E402

if settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

websocket_urls = [path("ws/live/", LiveConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # The session authenticates the socket; the Origin must be one of ALLOWED_HOSTS (no
        # other site's page may open it with the person's cookie).
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urls))),
    }
)
