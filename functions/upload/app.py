"""Lambda entry point (``Handler: app.lambda_handler``); the code lives in :mod:`powersync_upload`."""

from powersync_upload import snapstart
from powersync_upload.handler import lambda_handler, runtime

runtime()  # cold start: read and validate the environment and the configuration file, or fail here
snapstart.register()  # SnapStart's before-snapshot and after-restore hooks (no-op without the runtime's module)

__all__ = ["lambda_handler"]
