"""Launchers of the local real stack (DESIGN.md, "Local real stack"), for tests, benchmarks and
`make demo`. Each is an async context manager that starts one real process on loopback and
stops it (and only it) on the way out."""
