"""template.yaml: the per-source region, generated from the sources file."""
