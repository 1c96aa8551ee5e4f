"""`talkinghead serve`: the HTTP API (FastAPI). Portrait + speech in, talking-head mp4 out; dubbing; live streaming.

The package reads top-down: `app` (the factory and the runner) includes the routers of `routes` (jobs and
health) and `streaming` (the WebSocket); submissions arrive through `uploads`, are checked by `validation` and
rendered by `jobs`; `schemas` and `description` are what OpenAPI shows; `errors` turns every refusal into the
one JSON error body with a stable code. The routes and the error codes are described in `description`."""
from ..settings import Settings, make_settings
from .app import check_listen, create_app, serve
from .audiofeed import AudioFeed, FeedClosed, StreamSlots
from .errors import CODES, STREAM_CODES, ServiceError

__all__ = ["AudioFeed", "CODES", "FeedClosed", "STREAM_CODES", "ServiceError", "Settings", "StreamSlots",
           "check_listen", "create_app", "make_settings", "serve"]
