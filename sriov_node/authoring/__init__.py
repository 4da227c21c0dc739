"""Writing the desired state for the operator: `set`/`unset` (in-place TOML edits, applied as
one transaction) and `capture` (a config from what a host has).
"""
