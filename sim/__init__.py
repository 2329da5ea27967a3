"""Market simulator and backtester: venues built on the same ``ext`` book the engine uses."""
