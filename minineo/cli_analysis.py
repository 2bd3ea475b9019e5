"""Analysis sub-commands of `minineo` (registered on minineo.cli.app)."""
