"""The modeler's exceptions, one root.

```
ModelerError
├── ConfigError            the model configuration or a setting is wrong (named)
├── WarehouseUnavailable   ClickHouse cannot be reached
├── RunLocked              another run holds the lock
├── ModelFailed            a model's SQL failed; its previous data is intact
└── AlertDeliveryError     an alert channel refused an alert (in _alerts; never raised out
                           of a run: the dispatcher logs and counts it)
```
"""

from __future__ import annotations


class ModelerError(Exception):
    """Root of every error the modeler raises."""


class ConfigError(ModelerError, ValueError):
    """A setting or the model configuration is wrong; the message names it."""


class WarehouseUnavailable(ModelerError):
    """ClickHouse could not be reached."""


class RunLocked(ModelerError):
    """Another run holds the lock."""


class ModelFailed(ModelerError):
    """A model failed; the tables keep what the last good run wrote."""
