"""Release tooling: ``python -m release.build`` and ``python -m release.make_release`` (docs/release.md)."""
