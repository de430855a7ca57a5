"""Session lifecycle, profiles, manifest and integrity, CLI, storage and journals."""
