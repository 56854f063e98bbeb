import sys
from pathlib import Path

# Test helpers (reference checkpoints, plugin fixtures) are plain modules beside the tests.
sys.path.insert(0, str(Path(__file__).parent))

# The fake plugin distributions (`fake_site`) that registry and CLI tests build.
pytest_plugins = ["plugin_fixtures"]
