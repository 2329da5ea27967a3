"""Fill publishers: deliver the engine's event stream to the rest of the platform."""
