"""`python -m inspector.samples` is the `inspector samples` command (sample_images/README.md names both)."""

from inspector.cli import samples

samples(prog_name="python -m inspector.samples")
