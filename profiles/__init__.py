"""Runtime profiles (YAML data): strategy, precision, global batch, steps per loop."""
