"""The authors' own runs as repository data: their per-epoch curves, the convergence guard that compares a trial
with them while it trains, and the extractor that turned their published logs into that data."""
