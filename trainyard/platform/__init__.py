"""The core: data model, queue, jobs, scheduling, costs, storage, auth. Neither HTTP nor Ray."""
