"""Container HEALTHCHECK: exit 0 only when GET /health answers 200 (no curl in the image)."""

import os
import sys
import urllib.request

port = os.environ.get("EMBED_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:  # noqa: BLE001 - any failure is unhealthy
    sys.exit(1)
