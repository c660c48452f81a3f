"""maas: Model-as-a-Service. The SDK and the small core shared by every maas process.

`import maas` loads neither redis nor torch.
"""

from __future__ import annotations

__version__ = "0.1.0"
