"""Small helpers every layer may use: no op25b imports, no third-party imports."""
