"""Workers: the daemon that claims jobs, the per-attempt process, and training on Ray."""
