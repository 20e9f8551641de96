"""Study runners: each reads a TOML from experiments/, writes JSON Lines to results/ and its figure
to figures/. Run as ``python -m splitnet.studies.NAME experiments/NAME.toml``."""
