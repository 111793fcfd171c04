"""Entry point of the model CLI: python -m embedder_service.models --help."""

import sys

from embedder_service.models.cli import main

sys.exit(main())
