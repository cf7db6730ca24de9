"""Headwater's Python SDK: typed product events, delivered in the background.

```python
from headwater.sdk import Client, Event

class OrderCompleted(Event, name="order_completed"):
    order_id: str
    revenue_cents: int

hw = Client("write-key", host="http://localhost:8000")
hw.track(OrderCompleted(order_id="o1", revenue_cents=1299), distinct_id="u_42")
```
"""

import logging

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

logging.getLogger("headwater.sdk").addHandler(logging.NullHandler())

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
