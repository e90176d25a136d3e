"""ASGI entry point: HTTP through Django, websockets through Channels."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
# One connection per request, closed at its end: see DB_CONN_MAX_AGE in orchestrator/settings.py.
os.environ.setdefault("STEWARD_DB_CONN_MAX_AGE", "0")

from channels.routing import ProtocolTypeRouter
from django.conf import settings
from django.core.asgi import get_asgi_application

django_application = get_asgi_application()
if settings.DEBUG:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

application = ProtocolTypeRouter({"http": django_application})
