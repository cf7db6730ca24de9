"""Headwater's Python SDK: typed product events, delivered in the background.

```python
from headwater.sdk import Client, Event

class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int

hw = Client("write-key", host="http://localhost:8000")
hw.track(OrderCompleted(order_id="o1", revenue_cents=1299), distinct_id="u_42")
```

The SDK logs on the `headwater.sdk` logger and adds no handler to it, nor to the root:
an application without any logging set up still sees its warnings (a refused write key,
events given up on) on stderr through Python's last-resort handler, as with posthog's
and segment's Python clients. To silence them, configure that logger.
"""

from ._async_client import AsyncClient
from ._client import Client
from ._errors import (
    ClientClosed,
    ConfigError,
    DeliveryError,
    EventEncodingError,
    EventError,
    EventTooLarge,
    HeadwaterError,
    InvalidEvent,
    QueueFull,
    Rejected,
    ServerError,
    SpoolFull,
    TransportError,
    is_retryable,
)
from ._event import Event, event_name
from ._options import ClientOptions, OverflowPolicy
from ._schema import PlanError, tracking_plan
from ._stats import Stats
from ._transport import AsyncTransport, Response, Transport
from ._version import LIB, __version__
from ._wire import (
    Alias,
    AnyMessage,
    Batch,
    BatchResult,
    Encoding,
    Identify,
    Message,
    Rejection,
    Track,
    WireCodec,
)

__all__ = [
    "LIB",
    "Alias",
    "AnyMessage",
    "AsyncClient",
    "AsyncTransport",
    "Batch",
    "BatchResult",
    "Client",
    "ClientClosed",
    "ClientOptions",
    "ConfigError",
    "DeliveryError",
    "Encoding",
    "Event",
    "EventEncodingError",
    "EventError",
    "EventTooLarge",
    "HeadwaterError",
    "Identify",
    "InvalidEvent",
    "Message",
    "OverflowPolicy",
    "PlanError",
    "QueueFull",
    "Rejected",
    "Rejection",
    "Response",
    "ServerError",
    "SpoolFull",
    "Stats",
    "Track",
    "Transport",
    "TransportError",
    "WireCodec",
    "__version__",
    "event_name",
    "is_retryable",
    "tracking_plan",
]
