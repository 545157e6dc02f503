"""The reference core API (the app watchkeeper monitors in the product's story), its traffic
generator and ``watchkeeper demo``.

```python
from watchkeeper.demo import CoreApiSettings, coreapi_app
app = coreapi_app(CoreApiSettings())         # players, sessions, discovery, statistics; /metrics
```
"""

from __future__ import annotations

from watchkeeper.demo.api import coreapi_app
from watchkeeper.demo.settings import CoreApiSettings

__all__ = ["CoreApiSettings", "coreapi_app"]
